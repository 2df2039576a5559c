package dataplane

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The Manager keeps one netlink socket per netns it remembers and changes
// set members through it without entering the netns. The socket must be
// the netns's own: it goes when the Manager forgets the netns, and a new
// netns mounted at the same path gets its firewall (and a socket) of its
// own, while the old socket is closed.
func TestKeptSocketFollowsTheNetns(t *testing.T) {
	bed := newTestbed(t, false)
	m := newManager(t)
	mustApply(t, m, bed.srv, ingressSpec(cliV4+"/32"))
	first := keptSocket(t, m, bed.srv)

	// A member change goes through the kept socket: no new socket, and the
	// set in the netns holds the new member and not the old one.
	mustApply(t, m, bed.srv, ingressSpec(cliV4b+"/32"))
	if got := keptSocket(t, m, bed.srv); got != first {
		t.Errorf("a member change replaced the kept socket (inode %d -> %d)", first, got)
	}
	expectMembers(t, m, bed.srv, cliV4b+"/32")

	// Another netns at the same path: the change lands there, not in the
	// netns the kept socket belongs to (which the test still holds open).
	old, err := os.Open(bed.srv)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	run(t, "ip", "netns", "del", bed.srvName)
	run(t, "ip", "netns", "add", bed.srvName)
	mustApply(t, m, bed.srv, ingressSpec(cliV4+"/32", cliV4n+"/32"))
	expectMembers(t, m, bed.srv, cliV4+"/32", cliV4n+"/32")
	second := keptSocket(t, m, bed.srv)
	waitSocketClosed(t, first)
	if second == first {
		t.Errorf("the new netns uses the old netns's socket")
	}
	// The old netns kept what it had.
	oldPath := fmt.Sprintf("/proc/self/fd/%d", old.Fd())
	expectMembers(t, newManager(t), oldPath, cliV4b+"/32")

	m.Forget(bed.srv)
	waitSocketClosed(t, second)
}

// keptSocket returns the inode of the socket the Manager keeps for path.
func keptSocket(t *testing.T, m *Manager, path string) uint64 {
	t.Helper()
	m.mu.Lock()
	s := m.netns[path]
	m.mu.Unlock()
	if s == nil || s.conn == nil {
		t.Fatalf("the Manager keeps no socket for %s", path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(s.conn.fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// waitSocketClosed waits until no descriptor of the process is the socket
// with inode ino.
func waitSocketClosed(t *testing.T, ino uint64) {
	t.Helper()
	want := fmt.Sprintf("socket:[%d]", ino)
	for deadline := time.Now().Add(5 * time.Second); ; {
		fds, _ := filepath.Glob("/proc/self/fd/*")
		open := slices.ContainsFunc(fds, func(fd string) bool {
			l, err := os.Readlink(fd)
			return err == nil && l == want
		})
		if !open {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %d is still open", ino)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectMembers checks the members of the podwall IPv4 set of the netns at
// path, as the kernel lists them.
func expectMembers(t *testing.T, m *Manager, path string, members ...string) {
	t.Helper()
	rs := mustInspect(t, m, path)
	i := slices.IndexFunc(rs.Sets, func(s Set) bool { return s.Name == setName(familyV4, "0", rs.Generation) })
	if i < 0 {
		t.Fatalf("no podwall IPv4 set in %s: %+v", path, rs.Sets)
	}
	if got, want := rs.Sets[i].Members, prefixes(members...); !slices.Equal(got, want) {
		t.Errorf("members in %s = %v, want %v", path, got, want)
	}
}
