package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// podwall talks to the kernel's ipset subsystem over netlink (nfnetlink,
// NFNL_SUBSYS_IPSET), on a socket opened in the pod's netns, instead of
// running ipset(8): a peer joining or leaving a policy costs one message per
// member changed in each pod, not a process and a rebuild of the set. Many
// messages go in one sendmsg; the kernel acknowledges the last of each batch
// and reports every failing message on its own. The protocol is the one
// libipset speaks (include/uapi/linux/netfilter/ipset/ip_set.h).

// Commands (enum ipset_cmd).
const (
	ipsetCmdCreate  = 2
	ipsetCmdDestroy = 3
	ipsetCmdSwap    = 6
	ipsetCmdList    = 7
	ipsetCmdAdd     = 9
	ipsetCmdDel     = 10
	ipsetCmdType    = 13
)

// Attributes at command level, in create data, in element data and in an
// address.
const (
	ipsetAttrProtocol    = 1
	ipsetAttrSetName     = 2
	ipsetAttrTypeName    = 3 // the second set name of a swap, too
	ipsetAttrRevision    = 4
	ipsetAttrFamily      = 5
	ipsetAttrData        = 7
	ipsetAttrADT         = 8
	ipsetAttrRevisionMin = 10

	ipsetAttrIP        = 1
	ipsetAttrCIDR      = 3
	ipsetAttrTimeout   = 6
	ipsetAttrCADTFlags = 8
	ipsetAttrHashSize  = 18
	ipsetAttrMaxElem   = 19

	ipsetAttrIPAddrV4 = 1
	ipsetAttrIPAddrV6 = 2

	ipsetFlagNomatch = 1 << 2

	nlaFNested        = 1 << 15
	nlaFNetByteorder  = 1 << 14
	nlaTypeMask       = ^uint16(nlaFNested | nlaFNetByteorder)
	ipsetProtocolV6   = 6
	ipsetMaxRevision  = 7 // the newest hash:net revision ipset(8) 7.x can print
	ipsetBatchOps     = 256
	ipsetRecvBufBytes = 1 << 20
)

// Errors the kernel returns for ipset commands (enum ipset_errno), beyond
// the ordinary errno values.
const (
	ipsetErrProtocol     = 4097
	ipsetErrFindType     = 4098
	ipsetErrMaxSets      = 4099
	ipsetErrBusy         = 4100
	ipsetErrTypeMismatch = 4102
	ipsetErrExist        = 4103
	ipsetErrInvalidCIDR  = 4104
	ipsetErrInvalidFam   = 4106
	ipsetErrReferenced   = 4108
	ipsetErrHashFull     = 4352
)

var ipsetErrText = map[unix.Errno]string{
	ipsetErrProtocol:     "kernel does not speak this ipset protocol",
	ipsetErrFindType:     "set type not supported by the kernel",
	ipsetErrMaxSets:      "the kernel's maximum number of sets is reached",
	ipsetErrBusy:         "set is in use by a kernel component",
	ipsetErrTypeMismatch: "set type mismatch",
	ipsetErrExist:        "element or set already exists",
	ipsetErrInvalidCIDR:  "invalid prefix length",
	ipsetErrInvalidFam:   "invalid family",
	ipsetErrReferenced:   "set is referenced",
	ipsetErrHashFull:     "set is full",
}

// ipsetError is the kernel's answer to one failing ipset command.
type ipsetError struct {
	op    ipsetOp
	errno unix.Errno
}

func (e *ipsetError) Error() string {
	text, ok := ipsetErrText[e.errno]
	if !ok {
		text = e.errno.Error()
	}
	return fmt.Sprintf("ipset %s: %s", e.op, text)
}

// busy reports whether the kernel refused because the set is still
// referenced: after a transaction replaced the rules using a set, the
// kernel drops their references only after an RCU grace period.
func (e *ipsetError) busy() bool {
	return e.errno == ipsetErrBusy || e.errno == ipsetErrReferenced || e.errno == unix.EBUSY
}

// ipsetOp is one ipset command.
type ipsetOp struct {
	cmd    int
	set    string
	other  string       // swap: the set to swap with
	family family       // create
	size   int          // create: members it will hold
	member netip.Prefix // add, del
}

func (op ipsetOp) String() string {
	switch op.cmd {
	case ipsetCmdCreate:
		return fmt.Sprintf("create %s %s family %s", op.set, setType, op.family.setFamily())
	case ipsetCmdDestroy:
		return "destroy " + op.set
	case ipsetCmdSwap:
		return fmt.Sprintf("swap %s %s", op.set, op.other)
	case ipsetCmdAdd:
		return fmt.Sprintf("add %s %s", op.set, op.member)
	case ipsetCmdDel:
		return fmt.Sprintf("del %s %s", op.set, op.member)
	}
	return fmt.Sprintf("command %d %s", op.cmd, op.set)
}

// ipsetConn is a netlink socket to the ipset subsystem of the netns it was
// opened in. It is not safe for concurrent use.
type ipsetConn struct {
	fd       int
	seq      uint32
	revision uint8
	buf      []byte
	// committed is set once an nf_tables transaction went to the kernel on
	// this socket: closing it then waits for the kernel's deferred
	// destruction of the replaced rules, an RCU grace period (15-20 ms
	// here), so it is closed off the caller's path.
	committed bool
}

// closeSoon closes the connection, in the background if that may wait.
func (c *ipsetConn) closeSoon() {
	if c.committed {
		go c.close()
		return
	}
	c.close()
}

// hashNetRevision is the hash:net revision sets are created with, learnt from
// the kernel once (0: not yet).
var hashNetRevision atomic.Uint32

// openIPSet opens a netlink socket in the netns of the calling thread.
func openIPSet() (*ipsetConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("ipset netlink socket: %w", err)
	}
	c := &ipsetConn{fd: fd}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		c.close()
		return nil, fmt.Errorf("ipset netlink bind: %w", err)
	}
	// Every failing message gets an error ack: room for a batch of them.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ipsetRecvBufBytes); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, ipsetRecvBufBytes)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	tv := unix.Timeval{Sec: 10}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if r := hashNetRevision.Load(); r > 0 {
		c.revision = uint8(r - 1)
		return c, nil
	}
	if c.revision, err = c.typeRevision(setType); err != nil {
		c.close()
		return nil, err
	}
	hashNetRevision.Store(uint32(c.revision) + 1)
	return c, nil
}

func (c *ipsetConn) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	c.park()
}

// recvBufs are the receive buffers of the connections in use: a Manager
// keeps a connection per pod netns, and an idle one holds no buffer.
var recvBufs = sync.Pool{New: func() any { b := make([]byte, 1<<16); return &b }}

// park returns the connection's receive buffer while it is idle.
func (c *ipsetConn) park() {
	if c.buf != nil {
		b := c.buf
		recvBufs.Put(&b)
		c.buf = nil
	}
}

// typeRevision asks the kernel which revisions of a set type it has and picks
// the newest one ipset(8) can also print, so that operators can still list
// podwall's sets.
func (c *ipsetConn) typeRevision(typ string) (uint8, error) {
	var m nlBuilder
	c.seq++
	m.begin(ipsetCmdType, unix.NLM_F_REQUEST|unix.NLM_F_ACK, c.seq)
	m.attrU8(ipsetAttrProtocol, ipsetProtocolV6)
	m.attrString(ipsetAttrTypeName, typ)
	m.attrU8(ipsetAttrFamily, unix.NFPROTO_IPV4)
	m.end()
	if err := c.send(m.b); err != nil {
		return 0, err
	}
	var maxRev, minRev uint8
	found := false
	err := c.receive(c.seq, func(_ uint8, msg []byte) error {
		attrs := parseAttrs(msg)
		if v, ok := attrs[ipsetAttrRevision]; ok && len(v) == 1 {
			maxRev, found = v[0], true
		}
		if v, ok := attrs[ipsetAttrRevisionMin]; ok && len(v) == 1 {
			minRev = v[0]
		}
		return nil
	}, func(errno unix.Errno) error {
		if errno != 0 {
			return fmt.Errorf("ipset type %s: %w", typ, errno)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("ipset type %s: the kernel named no revision", typ)
	}
	return max(minRev, min(maxRev, ipsetMaxRevision)), nil
}

// run sends ops in batches and returns the failures, in the order of ops; a
// failing op does not stop the ones after it. The error is not nil when the
// exchange itself failed (then failures may be incomplete).
func (c *ipsetConn) run(ops []ipsetOp) ([]*ipsetError, error) {
	var failures []*ipsetError
	for start := 0; start < len(ops); start += ipsetBatchOps {
		batch := ops[start:min(start+ipsetBatchOps, len(ops))]
		first := c.seq + 1
		var m nlBuilder
		for i, op := range batch {
			c.seq++
			flags := uint16(unix.NLM_F_REQUEST)
			if i == len(batch)-1 {
				flags |= unix.NLM_F_ACK // the kernel handles messages in order: this ack ends the batch
			}
			c.encode(&m, op, flags)
		}
		if err := c.send(m.b); err != nil {
			return failures, err
		}
		last := c.seq
		err := c.receiveAcks(first, last, func(seq uint32, errno unix.Errno) {
			failures = append(failures, &ipsetError{op: batch[seq-first], errno: errno})
		})
		if err != nil {
			return failures, err
		}
	}
	return failures, nil
}

// encode appends op as one netlink message.
func (c *ipsetConn) encode(m *nlBuilder, op ipsetOp, flags uint16) {
	m.begin(op.cmd, flags, c.seq)
	m.attrU8(ipsetAttrProtocol, ipsetProtocolV6)
	m.attrString(ipsetAttrSetName, op.set)
	switch op.cmd {
	case ipsetCmdCreate:
		m.attrString(ipsetAttrTypeName, setType)
		m.attrU8(ipsetAttrRevision, c.revision)
		fam := uint8(unix.NFPROTO_IPV4)
		if op.family == familyV6 {
			fam = unix.NFPROTO_IPV6
		}
		m.attrU8(ipsetAttrFamily, fam)
		d := m.nest(ipsetAttrData)
		m.attrBE32(ipsetAttrHashSize, hashSize(op.size))
		m.attrBE32(ipsetAttrMaxElem, uint32(max(65536, op.size)))
		m.endNest(d)
	case ipsetCmdSwap:
		m.attrString(ipsetAttrTypeName, op.other)
	case ipsetCmdAdd, ipsetCmdDel:
		d := m.nest(ipsetAttrData)
		ip := m.nest(ipsetAttrIP)
		addr := op.member.Addr()
		if addr.Is4() {
			a := addr.As4()
			m.attr(ipsetAttrIPAddrV4|nlaFNetByteorder, a[:])
		} else {
			a := addr.As16()
			m.attr(ipsetAttrIPAddrV6|nlaFNetByteorder, a[:])
		}
		m.endNest(ip)
		m.attrU8(ipsetAttrCIDR, uint8(op.member.Bits()))
		m.endNest(d)
	}
	m.end()
}

// hashSize is the number of hash buckets a set starts with for n members:
// room for all of them at about two per bucket. The kernel grows a set whose
// bucket overflows by rehashing it and waiting for an RCU grace period
// (milliseconds each time); a set filled from 64 buckets to 8000 members
// paid that eight times, most of a rule change's cost.
func hashSize(n int) uint32 {
	size := uint32(64)
	for int(size)*2 < n && size < 1<<20 {
		size *= 2
	}
	return size
}

func (c *ipsetConn) send(b []byte) error {
	if err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("ipset netlink send: %w", err)
	}
	return nil
}

// recv reads one datagram of netlink messages.
func (c *ipsetConn) recv() ([]byte, error) {
	if c.buf == nil {
		c.buf = *recvBufs.Get().(*[]byte)
	}
	for {
		n, _, err := unix.Recvfrom(c.fd, c.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ipset netlink receive: %w", err)
		}
		return c.buf[:n], nil
	}
}

// receiveAcks reads acks until the one for seq last, calling failed for
// every error ack of a sequence number in [first, last].
func (c *ipsetConn) receiveAcks(first, last uint32, failed func(seq uint32, errno unix.Errno)) error {
	for {
		b, err := c.recv()
		if err != nil {
			return err
		}
		done := false
		for msg := range nlMessages(b) {
			if msg.typ != unix.NLMSG_ERROR || msg.seq < first || msg.seq > last || len(msg.data) < 4 {
				continue
			}
			errno := unix.Errno(-int32(binary.NativeEndian.Uint32(msg.data)))
			if errno != 0 {
				failed(msg.seq, errno)
			}
			if msg.seq == last {
				done = true
			}
		}
		if done {
			return nil
		}
	}
}

// receive reads the answer to the request seq: data messages go to onData
// (the family of their struct nfgenmsg and their attributes), and the final
// ack (or error, or the end of a dump) to onEnd.
func (c *ipsetConn) receive(seq uint32, onData func(family uint8, attrs []byte) error, onEnd func(unix.Errno) error) error {
	for {
		b, err := c.recv()
		if err != nil {
			return err
		}
		for msg := range nlMessages(b) {
			if msg.seq != seq {
				continue
			}
			switch msg.typ {
			case unix.NLMSG_ERROR:
				if len(msg.data) < 4 {
					return errors.New("ipset netlink: short error message")
				}
				return onEnd(unix.Errno(-int32(binary.NativeEndian.Uint32(msg.data))))
			case unix.NLMSG_DONE:
				return onEnd(0)
			default:
				if len(msg.data) < 4 {
					continue
				}
				if err := onData(msg.data[0], msg.data[4:]); err != nil { // struct nfgenmsg: family first
					return err
				}
			}
		}
	}
}

// list returns the podwall sets of the netns with their members, as
// observedSets: a member with options podwall never sets (nomatch, a timeout,
// a comment...) is an extra.
func (c *ipsetConn) list() (map[string]*observedSet, error) {
	var m nlBuilder
	c.seq++
	m.begin(ipsetCmdList, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, c.seq)
	m.attrU8(ipsetAttrProtocol, ipsetProtocolV6)
	m.end()
	if err := c.send(m.b); err != nil {
		return nil, err
	}
	sets := map[string]*observedSet{}
	err := c.receive(c.seq, func(_ uint8, msg []byte) error {
		attrs := parseAttrs(msg)
		name := cString(attrs[ipsetAttrSetName])
		if !isPodwallSet(name) {
			return nil
		}
		s, ok := sets[name]
		if !ok {
			s = &observedSet{Set: Set{Name: name}}
			sets[name] = s
		}
		if v, ok := attrs[ipsetAttrTypeName]; ok {
			s.typ = cString(v)
		}
		if v, ok := attrs[ipsetAttrFamily]; ok && len(v) == 1 {
			switch v[0] {
			case unix.NFPROTO_IPV4:
				s.Family = familyV4.setFamily()
			case unix.NFPROTO_IPV6:
				s.Family = familyV6.setFamily()
			default:
				s.Family = fmt.Sprintf("family-%d", v[0])
			}
		}
		for _, elem := range parseAttrList(attrs[ipsetAttrADT]) {
			p, extra := parseElement(elem.data)
			if extra != "" {
				s.extras = append(s.extras, extra)
				continue
			}
			s.Members = append(s.Members, p)
		}
		return nil
	}, func(errno unix.Errno) error {
		if errno != 0 {
			return fmt.Errorf("ipset list: %w", errno)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, s := range sets {
		slices.SortFunc(s.Members, comparePrefix)
	}
	return sets, nil
}

// parseElement parses one hash:net element; extra describes it when it is
// not a plain prefix.
func parseElement(data []byte) (p netip.Prefix, extra string) {
	var addr netip.Addr
	bits := -1
	var others []string
	for _, a := range parseAttrList(data) {
		switch a.typ {
		case ipsetAttrIP:
			for _, ip := range parseAttrList(a.data) {
				if ap, ok := netip.AddrFromSlice(ip.data); ok && (ip.typ == ipsetAttrIPAddrV4 || ip.typ == ipsetAttrIPAddrV6) {
					addr = ap
				}
			}
		case ipsetAttrCIDR:
			if len(a.data) == 1 {
				bits = int(a.data[0])
			}
		case ipsetAttrCADTFlags:
			if len(a.data) == 4 {
				flags := binary.BigEndian.Uint32(a.data)
				if flags&ipsetFlagNomatch != 0 {
					others = append(others, "nomatch")
				} else if flags != 0 {
					others = append(others, fmt.Sprintf("flags %#x", flags))
				}
			}
		case ipsetAttrTimeout:
			if len(a.data) == 4 {
				others = append(others, fmt.Sprintf("timeout %d", binary.BigEndian.Uint32(a.data)))
			}
		default:
			others = append(others, fmt.Sprintf("attribute %d", a.typ))
		}
	}
	if bits < 0 && addr.IsValid() {
		bits = addr.BitLen()
	}
	p = netip.PrefixFrom(addr, bits)
	if !p.IsValid() || len(others) > 0 {
		return p, strings.TrimSpace(p.String() + " " + strings.Join(others, " "))
	}
	return p, ""
}

// nlBuilder builds netlink messages (nfnetlink, subsystem ipset) in b.
type nlBuilder struct {
	b     []byte
	start int
}

func (m *nlBuilder) begin(cmd int, flags uint16, seq uint32) {
	m.beginNfnl(unix.NFNL_SUBSYS_IPSET, cmd, unix.AF_INET, flags, seq)
}

// beginNfnl starts a message of an nfnetlink subsystem.
func (m *nlBuilder) beginNfnl(subsys, cmd int, family uint8, flags uint16, seq uint32) {
	m.start = len(m.b)
	var h [unix.SizeofNlMsghdr + 4]byte
	binary.NativeEndian.PutUint16(h[4:], uint16(subsys<<8|cmd))
	binary.NativeEndian.PutUint16(h[6:], flags)
	binary.NativeEndian.PutUint32(h[8:], seq)
	h[unix.SizeofNlMsghdr] = family // struct nfgenmsg: family, version 0, res_id 0
	m.b = append(m.b, h[:]...)
}

func (m *nlBuilder) end() {
	binary.NativeEndian.PutUint32(m.b[m.start:], uint32(len(m.b)-m.start))
}

func (m *nlBuilder) attr(typ uint16, data []byte) {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	m.b = append(m.b, h[:]...)
	m.b = append(m.b, data...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *nlBuilder) attrU8(typ uint16, v uint8) { m.attr(typ, []byte{v}) }

func (m *nlBuilder) attrBE32(typ uint16, v uint32) {
	m.attr(typ|nlaFNetByteorder, binary.BigEndian.AppendUint32(nil, v))
}

func (m *nlBuilder) attrString(typ uint16, s string) { m.attr(typ, append([]byte(s), 0)) }

// nest starts a nested attribute; endNest closes it.
func (m *nlBuilder) nest(typ uint16) int {
	at := len(m.b)
	m.attr(typ|nlaFNested, nil)
	return at
}

func (m *nlBuilder) endNest(at int) {
	binary.NativeEndian.PutUint16(m.b[at:], uint16(len(m.b)-at))
}

// nlMessage is one received netlink message.
type nlMessage struct {
	typ  uint16
	seq  uint32
	data []byte
}

// nlMessages iterates over the netlink messages in b.
func nlMessages(b []byte) func(func(nlMessage) bool) {
	return func(yield func(nlMessage) bool) {
		for len(b) >= unix.SizeofNlMsghdr {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return
			}
			msg := nlMessage{
				typ:  binary.NativeEndian.Uint16(b[4:]),
				seq:  binary.NativeEndian.Uint32(b[8:]),
				data: b[unix.SizeofNlMsghdr:l],
			}
			if !yield(msg) {
				return
			}
			b = b[min(nlAlign(l), len(b)):]
		}
	}
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// nlAttr is one netlink attribute, its type without the nested and byte
// order flags.
type nlAttr struct {
	typ  uint16
	data []byte
}

func parseAttrList(b []byte) []nlAttr {
	var out []nlAttr
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			break
		}
		out = append(out, nlAttr{typ: binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask, data: b[4:l]})
		b = b[min(nlAlign(l), len(b)):]
	}
	return out
}

// parseAttrs returns the attributes of b by type (the last one wins).
func parseAttrs(b []byte) map[uint16][]byte {
	out := map[uint16][]byte{}
	for _, a := range parseAttrList(b) {
		out[a.typ] = a.data
	}
	return out
}

func cString(b []byte) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
