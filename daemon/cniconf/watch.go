package cniconf

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// watchMask are the inotify events on the configuration directory that may
// mean a configuration file was written, replaced or removed, or that the
// directory itself went away.
const watchMask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
	unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// settleQuiet is how long the directory must be quiet after an event before
// Watch installs again: a writer's create, write and rename come in a burst.
// settleMax bounds the wait when the events never stop.
const (
	settleQuiet = 200 * time.Millisecond
	settleMax   = 2 * time.Second
)

// Watch runs Install now, again whenever a configuration file in o.Dir is
// created, written, renamed or removed (inotify), and every interval (a
// safety net for missed events, and for the directory appearing later),
// until ctx ends. ENI agents rewrite their own conflist when they restart
// (aws-node regenerates 10-aws.conflist), which drops podwall's entry: Watch
// puts it back, typically within a second. Each outcome, errors included,
// goes to report; Watch carries on after errors. It returns nil when ctx
// ends, or an error if inotify is not available at all.
func Watch(ctx context.Context, o Options, interval time.Duration, report func(Result, error)) error {
	if interval <= 0 {
		return fmt.Errorf("watch %s: interval %s must be positive", o.Dir, interval)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("watch %s: inotify: %w", o.Dir, err)
	}
	// A non-blocking fd goes to the runtime's poller: Read blocks the
	// goroutine only, and Close ends it.
	events := os.NewFile(uintptr(fd), "inotify")
	defer events.Close()
	changed := make(chan struct{}, 1)
	gone := make(chan struct{}, 1)
	go readEvents(events, changed, gone)

	watching := false
	addWatch := func() {
		if !watching {
			_, err := unix.InotifyAddWatch(fd, o.Dir, watchMask)
			watching = err == nil
		}
	}
	// Watch first, then install: a change in between is not missed.
	addWatch()
	report(Install(o))
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-gone:
			watching = false
		case <-changed:
			settle(ctx, changed)
			report(Install(o))
		case <-ticker.C:
			addWatch()
			report(Install(o))
		}
	}
}

// settle waits until no event came for settleQuiet, at most settleMax.
func settle(ctx context.Context, changed <-chan struct{}) {
	limit := time.NewTimer(settleMax)
	defer limit.Stop()
	for {
		quiet := time.NewTimer(settleQuiet)
		select {
		case <-changed:
			quiet.Stop()
		case <-quiet.C:
			return
		case <-limit.C:
			quiet.Stop()
			return
		case <-ctx.Done():
			quiet.Stop()
			return
		}
	}
}

// readEvents reads inotify events until the file is closed, signalling
// changed for events on configuration files (and queue overflows), and
// gone when the watched directory was removed or moved.
func readEvents(f *os.File, changed, gone chan<- struct{}) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				signal(changed) // let the loop look at the directory itself
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			nameStart := off + unix.SizeofInotifyEvent
			off = nameStart + nameLen
			if off > n {
				break
			}
			name := string(bytes.TrimRight(buf[nameStart:off], "\x00"))
			switch {
			case mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0:
				signal(gone)
				signal(changed)
			case mask&unix.IN_Q_OVERFLOW != 0, isConfigName(name):
				signal(changed)
			}
		}
	}
}

// signal sends on a one-slot channel without blocking: pending is enough.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
