package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// podwall writes its iptables rules over nf_tables netlink, in the form
// iptables-nft 1.8.9 gives them, instead of running iptables-nft-restore:
// the same table, chains and rule expressions, so that iptables-nft-save
// prints them as it prints rules iptables-nft wrote (inspect.go reads them
// that way). A switch of both families is one nf_tables transaction
// (NFNL_MSG_BATCH_BEGIN ... END): every message is acknowledged on its own,
// so an error names the step that failed, and a failing step aborts the
// whole batch, leaving the rules as they were.
//
// What iptables-nft 1.8.9 writes for podwall's rule vocabulary, as read
// back from the kernel (nft --debug=netlink and NFT_MSG_GETRULE dumps):
//
//	-i lo / -o lo          meta iifname/oifname => reg 1; cmp eq "lo\0"
//	-p tcp|udp|sctp|ipv6-icmp  meta l4proto => reg 1; cmp eq <proto> (both families)
//	-m tcp|udp --dport P   payload 2b @ transport header + 2 => reg 1; cmp eq P
//	-m tcp|udp --dport P:Q   the same; range eq reg 1 P Q (P:P is a cmp)
//	-m sctp --dport P[:Q]  xt match sctp rev 0 (struct xt_sctp_info)
//	-m icmp6 --icmpv6-type T  xt match icmp6 rev 0 (struct ip6t_icmp)
//	-m conntrack --ctstate S  xt match conntrack rev 3 (struct xt_conntrack_mtinfo3)
//	-m set --match-set N src|dst  xt match set rev 4 (struct xt_set_info_match_v4,
//	                       holding the set's kernel index, not its name)
//	-m comment --comment C xt match comment rev 0 (char[256]; not rule userdata)
//	(every rule)           counter, after the matches
//	-j ACCEPT|DROP|CHAIN   immediate reg 0 accept / drop / jump CHAIN
//
// Matches keep their command-line order; -i/-o and -p come first. No rule
// carries userdata. Every rule is sent with NFTA_RULE_COMPAT holding its -p
// protocol (the sctp and icmp6 matches refuse a rule without it); the
// kernel does not keep it, so it is not in a dump. A table iptables-nft-restore creates
// is "filter" with no flags; it creates the built-in chains lazily, just
// before the first rule that goes into one: type filter, hook input /
// forward / output, priority 0 (NF_IP_PRI_FILTER), policy accept.

// nf_tables netlink (include/uapi/linux/netfilter/nf_tables.h and
// nfnetlink.h).
const (
	nftMsgNewTable = 0
	nftMsgGetTable = 1
	nftMsgNewChain = 3
	nftMsgGetChain = 4
	nftMsgDelChain = 5
	nftMsgNewRule  = 6
	nftMsgGetRule  = 7
	nftMsgDelRule  = 8

	nfnlMsgBatchBegin = 0x10
	nfnlMsgBatchEnd   = 0x11

	nftTableFilter = "filter"

	nftaTableName  = 1
	nftaTableFlags = 2

	nftaChainTable  = 1
	nftaChainHandle = 2
	nftaChainName   = 3
	nftaChainHook   = 4
	nftaChainPolicy = 5
	nftaChainType   = 7

	nftaHookHooknum  = 1
	nftaHookPriority = 2

	nftaRuleTable       = 1
	nftaRuleChain       = 2
	nftaRuleHandle      = 3
	nftaRuleExpressions = 4
	nftaRuleCompat      = 5
	nftaRuleUserdata    = 7

	nftaRuleCompatProto = 1
	nftaRuleCompatFlags = 2

	nftaListElem = 1
	nftaExprName = 1
	nftaExprData = 2

	nftaDataValue    = 1
	nftaDataVerdict  = 2
	nftaVerdictCode  = 1
	nftaVerdictChain = 2

	nftaMetaDreg   = 1
	nftaMetaKey    = 2
	nftMetaIIFName = 6
	nftMetaOIFName = 7
	nftMetaL4Proto = 16

	nftaCmpSreg = 1
	nftaCmpOp   = 2
	nftaCmpData = 3
	nftCmpEq    = 0

	nftaPayloadDreg           = 1
	nftaPayloadBase           = 2
	nftaPayloadOffset         = 3
	nftaPayloadLen            = 4
	nftPayloadTransportHeader = 2

	nftaRangeSreg     = 1
	nftaRangeOp       = 2
	nftaRangeFromData = 3
	nftaRangeToData   = 4

	nftaCounterBytes   = 1
	nftaCounterPackets = 2

	nftaImmediateDreg = 1
	nftaImmediateData = 2

	nftaMatchName = 1
	nftaMatchRev  = 2
	nftaMatchInfo = 3

	nftRegVerdict = 0
	nftReg1       = 1

	nfDrop    = 0
	nfAccept  = 1
	nftReturn = -5
	nftJump   = -3
	nftGoto   = -4

	nfIPPriFilter  = 0
	nfPolicyAccept = 1
)

// Built-in chains of the filter table and their hooks (enum nf_inet_hooks).
var filterHooks = map[string]uint32{"INPUT": 1, "FORWARD": 2, "OUTPUT": 3}

// ruleStep is one message of a batch, described for errors.
type ruleStep struct {
	f    family
	what string
}

// nftBatch is one nf_tables transaction being built.
type nftBatch struct {
	c     *ipsetConn
	m     nlBuilder
	begin uint32
	steps map[uint32]ruleStep
}

func newNftBatch(c *ipsetConn) *nftBatch {
	b := &nftBatch{c: c, steps: map[uint32]ruleStep{}}
	c.seq++
	b.begin = c.seq
	b.m.beginNfnl(0, nfnlMsgBatchBegin, unix.AF_UNSPEC, unix.NLM_F_REQUEST, c.seq)
	binary.BigEndian.PutUint16(b.m.b[b.m.start+unix.SizeofNlMsghdr+2:], unix.NFNL_SUBSYS_NFTABLES) // res_id
	b.m.end()
	return b
}

// msg starts a message of the batch that is acknowledged on its own.
func (b *nftBatch) msg(f family, typ int, flags uint16, what string) {
	b.c.seq++
	b.steps[b.c.seq] = ruleStep{f: f, what: what}
	b.m.beginNfnl(unix.NFNL_SUBSYS_NFTABLES, typ, nfproto(f), unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags, b.c.seq)
	b.m.attrString(nftaRuleTable, nftTableFilter) // NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE} are all 1
}

func (b *nftBatch) empty() bool { return len(b.steps) == 0 }

// commit ends the batch, sends it and waits for every acknowledgement. An
// error names the first step that failed; the kernel then applied nothing.
func (b *nftBatch) commit() error {
	last := b.c.seq
	b.c.seq++
	b.m.beginNfnl(0, nfnlMsgBatchEnd, unix.AF_UNSPEC, unix.NLM_F_REQUEST, b.c.seq)
	binary.BigEndian.PutUint16(b.m.b[b.m.start+unix.SizeofNlMsghdr+2:], unix.NFNL_SUBSYS_NFTABLES)
	b.m.end()
	if n := len(b.m.b); n > 1<<17 {
		// A batch goes in one datagram: make room for it.
		_ = unix.SetsockoptInt(b.c.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*n)
	}
	if n := len(b.steps) * 64; n > ipsetRecvBufBytes/2 {
		_ = unix.SetsockoptInt(b.c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2*n)
	}
	if err := b.c.send(b.m.b); err != nil {
		return fmt.Errorf("nf_tables batch: %w", err)
	}
	type failure struct {
		seq   uint32
		errno unix.Errno
	}
	var failures []failure
	for {
		buf, err := b.c.recv()
		if err != nil {
			return fmt.Errorf("nf_tables batch: %w", err)
		}
		done := false
		for msg := range nlMessages(buf) {
			if msg.typ != unix.NLMSG_ERROR || msg.seq < b.begin || msg.seq > last || len(msg.data) < 4 {
				continue
			}
			errno := unix.Errno(-int32(binary.NativeEndian.Uint32(msg.data)))
			if msg.seq == b.begin {
				return fmt.Errorf("nf_tables batch refused: %w", errno)
			}
			if errno != 0 {
				failures = append(failures, failure{msg.seq, errno})
			}
			if msg.seq == last {
				done = true
			}
		}
		if done {
			break
		}
	}
	if len(failures) == 0 {
		return nil
	}
	slices.SortFunc(failures, func(a, b failure) int { return int(a.seq) - int(b.seq) })
	first := failures[0]
	st := b.steps[first.seq]
	more := ""
	if len(failures) > 1 {
		more = fmt.Sprintf(" (and %d later steps failed with it)", len(failures)-1)
	}
	return fmt.Errorf("%s: %s: %w%s; nothing was changed", st.f, st.what, first.errno, more)
}

// nftFamilyState is what the writer needs to know of a family's filter
// table before changing it.
type nftFamilyState struct {
	table  bool
	chains map[string]bool
}

// writeTransitions performs, for each family with do[f], the transition
// planTransition plans from cur[f] to want[f], both families in one
// nf_tables transaction. Nothing changes when it fails.
func (x *executor) writeTransitions(want, cur [2]table, do [2]bool) error {
	var plans [2]*transition
	for _, f := range families {
		if !do[f] {
			continue
		}
		if t, ok := planTransition(want[f], cur[f]); ok {
			plans[f] = &t
		}
	}
	if plans[familyV4] == nil && plans[familyV6] == nil {
		return nil
	}
	if err := x.ctx.Err(); err != nil {
		return err
	}
	c, err := x.ipsetConn()
	if err != nil {
		return err
	}
	tables, err := c.filterTables()
	if err != nil {
		return err
	}
	indexes := map[string]uint16{}
	b := newNftBatch(c)
	for _, f := range families {
		t := plans[f]
		if t == nil {
			continue
		}
		st := nftFamilyState{table: tables[f], chains: map[string]bool{}}
		if st.table {
			chains, err := c.nftChains(f)
			if err != nil {
				return err
			}
			for _, ch := range chains {
				st.chains[ch.name] = true
			}
		}
		handles, err := x.jumpHandles(c, f, cur[f], t.deleteJumps)
		if err != nil {
			return err
		}
		if err := c.setIndexes(t.rules, indexes); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := b.addTransition(f, t, &st, handles, indexes); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	if b.empty() {
		return nil
	}
	x.m.nftBatches.Add(1)
	c.committed = true
	return b.commit()
}

// addTransition appends the messages of one family's transition, in the
// order iptables-nft-restore --noflush performs renderTransition's text.
func (b *nftBatch) addTransition(f family, t *transition, st *nftFamilyState, handles []uint64, indexes map[string]uint16) error {
	if !st.table {
		b.msg(f, nftMsgNewTable, unix.NLM_F_CREATE, "create table filter")
		b.m.attrBE32(nftaTableFlags, 0)
		b.m.end()
		st.table = true
	}
	for _, name := range t.declare {
		if st.chains[name] {
			b.msg(f, nftMsgDelRule, 0, "flush chain "+name)
			b.m.attrString(nftaRuleChain, name)
			b.m.end()
			continue
		}
		b.msg(f, nftMsgNewChain, unix.NLM_F_CREATE, "create chain "+name)
		b.m.attrString(nftaChainName, name)
		b.m.end()
		st.chains[name] = true
	}
	for i, j := range t.deleteJumps {
		b.msg(f, nftMsgDelRule, 0, fmt.Sprintf("-D %s %s", j.from, j.spec))
		b.m.attrString(nftaRuleChain, j.from)
		b.m.attr(nftaRuleHandle|nlaFNetByteorder, binary.BigEndian.AppendUint64(nil, handles[i]))
		b.m.end()
	}
	for _, j := range t.insertJumps {
		if j.pos != 1 {
			return fmt.Errorf("-I %s %d %s: only insertion at position 1 is supported", j.from, j.pos, j.spec)
		}
		if err := b.addRule(f, st, j.from, j.spec, fmt.Sprintf("-I %s %d %s", j.from, j.pos, j.spec), false, indexes); err != nil {
			return err
		}
	}
	for _, r := range t.rules {
		rest, ok := strings.CutPrefix(r, "-A ")
		chain, spec, ok2 := strings.Cut(rest, " ")
		if !ok || !ok2 {
			return fmt.Errorf("rule %q: not an -A rule", r)
		}
		if err := b.addRule(f, st, chain, spec, r, true, indexes); err != nil {
			return err
		}
	}
	for _, name := range t.gone {
		b.msg(f, nftMsgDelRule, 0, "-F "+name)
		b.m.attrString(nftaRuleChain, name)
		b.m.end()
	}
	for _, name := range t.gone {
		b.msg(f, nftMsgDelChain, 0, "-X "+name)
		b.m.attrString(nftaChainName, name)
		b.m.end()
	}
	return nil
}

// addRule appends one rule to chain (at its end with appendRule, else at
// its start), creating the built-in chain first if it does not exist yet.
func (b *nftBatch) addRule(f family, st *nftFamilyState, chain, spec, line string, appendRule bool, indexes map[string]uint16) error {
	if hook, ok := filterHooks[chain]; ok && !st.chains[chain] {
		b.msg(f, nftMsgNewChain, unix.NLM_F_CREATE, "create built-in chain "+chain)
		b.m.attrString(nftaChainName, chain)
		h := b.m.nest(nftaChainHook)
		b.m.attrBE32(nftaHookHooknum, hook)
		b.m.attrBE32(nftaHookPriority, nfIPPriFilter)
		b.m.endNest(h)
		b.m.attrBE32(nftaChainPolicy, nfPolicyAccept)
		b.m.attrString(nftaChainType, "filter")
		b.m.end()
		st.chains[chain] = true
	}
	flags := uint16(unix.NLM_F_CREATE)
	if appendRule {
		flags |= unix.NLM_F_APPEND
	}
	start := len(b.m.b)
	b.msg(f, nftMsgNewRule, flags, line)
	b.m.attrString(nftaRuleChain, chain)
	if err := encodeRule(&b.m, f, splitRule(spec), indexes); err != nil {
		b.m.b = b.m.b[:start]
		delete(b.steps, b.c.seq)
		return fmt.Errorf("rule %q: %w", line, err)
	}
	b.m.end()
	return nil
}

// jumpHandles returns the handles of the jumps del, which are among cur's
// jumps: the podwall jumps of each chain, read over netlink, are cur's
// jumps of that chain in order.
func (x *executor) jumpHandles(c *ipsetConn, f family, cur table, del []jump) ([]uint64, error) {
	if len(del) == 0 {
		return nil, nil
	}
	byChain := map[string][]nftRule{}
	handles := make([]uint64, len(del))
	used := map[jump]int{}
	for i, d := range del {
		found, ok := byChain[d.from]
		if !ok {
			rules, err := c.nftRules(f, d.from)
			if err != nil {
				return nil, err
			}
			for _, r := range rules {
				if to, ok := ruleVerdictChain(r.exprs); ok && isPodwallChain(to) {
					found = append(found, r)
				}
			}
			byChain[d.from] = found
			var want []jump
			for _, j := range cur.jumps {
				if j.from == d.from {
					want = append(want, j)
				}
			}
			if len(want) != len(found) {
				return nil, fmt.Errorf("%s: chain %s has %d jumps to podwall chains, expected %d: the rules changed", f, d.from, len(found), len(want))
			}
		}
		// The k-th jump of chain d.from in cur's order.
		k, seen := 0, 0
		for _, j := range cur.jumps {
			if j.from != d.from {
				continue
			}
			if j == d {
				if seen == used[d] {
					break
				}
				seen++
			}
			k++
		}
		used[d]++
		if k >= len(found) {
			return nil, fmt.Errorf("%s: jump %q not found", f, "-A "+d.from+" "+d.spec)
		}
		if to, _ := ruleVerdictChain(found[k].exprs); to != d.to {
			return nil, fmt.Errorf("%s: jump %q: rule %d of %s jumps to %s: the rules changed", f, "-A "+d.from+" "+d.spec, k+1, d.from, to)
		}
		handles[i] = found[k].handle
	}
	return handles, nil
}

// ruleVerdictChain returns the chain a rule's last expression jumps or
// goes to.
func ruleVerdictChain(exprs []byte) (string, bool) {
	list := parseAttrList(exprs)
	if len(list) == 0 {
		return "", false
	}
	e := parseAttrs(list[len(list)-1].data)
	if cString(e[nftaExprName]) != "immediate" {
		return "", false
	}
	d := parseAttrs(parseAttrs(e[nftaExprData])[nftaImmediateData])
	v := parseAttrs(d[nftaDataVerdict])
	code := v[nftaVerdictCode]
	if len(code) != 4 {
		return "", false
	}
	switch int32(binary.BigEndian.Uint32(code)) {
	case nftJump, nftGoto:
		return cString(v[nftaVerdictChain]), true
	}
	return "", false
}

// setIndexes learns the kernel index of every set rules match on that is
// not in indexes yet.
func (c *ipsetConn) setIndexes(rules []string, indexes map[string]uint16) error {
	for _, r := range rules {
		for _, name := range matchSets(r) {
			if _, ok := indexes[name]; ok {
				continue
			}
			i, err := c.setIndex(name)
			if err != nil {
				return fmt.Errorf("rule %q: %w", r, err)
			}
			indexes[name] = i
		}
	}
	return nil
}

const (
	ipsetCmdGetByName = 14
	ipsetAttrIndex    = 11
)

// setIndex asks the kernel for the index of the named set
// (IPSET_CMD_GET_BYNAME), which the xt set match holds.
func (c *ipsetConn) setIndex(name string) (uint16, error) {
	var m nlBuilder
	c.seq++
	m.begin(ipsetCmdGetByName, unix.NLM_F_REQUEST|unix.NLM_F_ACK, c.seq)
	m.attrU8(ipsetAttrProtocol, 7) // the command is protocol 7's
	m.attrString(ipsetAttrSetName, name)
	m.end()
	if err := c.send(m.b); err != nil {
		return 0, err
	}
	index, found := uint16(0), false
	err := c.receive(c.seq, func(_ uint8, attrs []byte) error {
		if v := parseAttrs(attrs)[ipsetAttrIndex]; len(v) == 2 {
			index, found = binary.BigEndian.Uint16(v), true
		}
		return nil
	}, func(errno unix.Errno) error {
		if errno == unix.ENOENT {
			return fmt.Errorf("set %s does not exist", name)
		}
		if errno != 0 {
			return fmt.Errorf("find set %s: %w", name, errno)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("find set %s: the kernel named no index", name)
	}
	return index, nil
}

// Sizes of the xt match infos, XT_ALIGNed, as the kernel expects them.
const (
	xtConntrackInfoLen = 168
	xtSetInfoLen       = 48
	xtCommentInfoLen   = 256
	xtSCTPInfoLen      = 296
	xtICMP6InfoLen     = 8
)

var protocolNumbers = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP, "ipv6-icmp": unix.IPPROTO_ICMPV6, "icmpv6": unix.IPPROTO_ICMPV6}

// matchOptions are the matches encodeRule knows, with the one option
// each takes.
var matchOptions = map[string][]string{
	"conntrack": {"--ctstate"}, "set": {"--match-set"}, "comment": {"--comment"},
	"tcp": {"--dport"}, "udp": {"--dport"}, "sctp": {"--dport"}, "icmp6": {"--icmpv6-type"},
}

var ctStates = map[string]uint16{"INVALID": 1 << 0, "ESTABLISHED": 1 << 1, "RELATED": 1 << 2, "NEW": 1 << 3, "UNTRACKED": 1 << 8}

// encodeRule appends NFTA_RULE_EXPRESSIONS for a rule spec (the words after
// "-A <chain>") in family f, as iptables-nft 1.8.9 encodes it. It knows
// podwall's rule vocabulary (see Render) and rejects anything else.
func encodeRule(m *nlBuilder, f family, words []string, indexes map[string]uint16) error {
	var iif, oif, proto, target string
	type match struct {
		name string
		opts []string
	}
	var matches []match
	for i := 0; i < len(words); i++ {
		w := words[i]
		arg := func() (string, error) {
			if i+1 >= len(words) {
				return "", fmt.Errorf("%s needs an argument", w)
			}
			i++
			return words[i], nil
		}
		var err error
		switch {
		case w == "-i":
			iif, err = arg()
		case w == "-o":
			oif, err = arg()
		case w == "-p":
			proto, err = arg()
		case w == "-j":
			target, err = arg()
		case w == "-m":
			var name string
			if name, err = arg(); err == nil {
				if _, ok := matchOptions[name]; !ok {
					return fmt.Errorf("unsupported match %q", name)
				}
				matches = append(matches, match{name: name})
			}
		case strings.HasPrefix(w, "--") && len(matches) > 0:
			var v string
			v, err = arg()
			last := &matches[len(matches)-1]
			last.opts = append(last.opts, w, v)
			if w == "--match-set" {
				if v, err = arg(); err == nil {
					last.opts = append(last.opts, v)
				}
			}
		default:
			err = fmt.Errorf("unsupported word %q", w)
		}
		if err != nil {
			return err
		}
	}
	if target == "" {
		return errors.New("no target")
	}
	var protoNum uint8
	if proto != "" {
		n, ok := protocolNumbers[proto]
		if !ok {
			return fmt.Errorf("unsupported protocol %q", proto)
		}
		protoNum = n
	}
	exprs := m.nest(nftaRuleExpressions)
	if iif != "" {
		encodeIfname(m, nftMetaIIFName, iif)
	}
	if oif != "" {
		encodeIfname(m, nftMetaOIFName, oif)
	}
	if proto != "" {
		e := beginExpr(m, "meta")
		m.attrBE32(nftaMetaKey, nftMetaL4Proto)
		m.attrBE32(nftaMetaDreg, nftReg1)
		endExpr(m, e)
		encodeCmp(m, []byte{protoNum})
	}
	for _, mt := range matches {
		want := matchOptions[mt.name]
		nopts := 2
		if mt.name == "set" {
			nopts = 3 // --match-set NAME src|dst
		}
		if len(mt.opts) != nopts || mt.opts[0] != want[0] {
			return fmt.Errorf("match %s: options %q: want %s only", mt.name, mt.opts, want[0])
		}
		v := mt.opts[1]
		switch mt.name {
		case "conntrack":
			var mask uint16
			for _, s := range strings.Split(v, ",") {
				bit, ok := ctStates[s]
				if !ok {
					return fmt.Errorf("unsupported conntrack state %q", s)
				}
				mask |= bit
			}
			info := make([]byte, xtConntrackInfoLen)
			binary.NativeEndian.PutUint16(info[146:], 1) // match_flags: XT_CONNTRACK_STATE
			binary.NativeEndian.PutUint16(info[150:], mask)
			encodeXtMatch(m, "conntrack", 3, info)
		case "set":
			name, dir := v, mt.opts[2]
			index, ok := indexes[name]
			if !ok {
				return fmt.Errorf("set %s: index unknown", name)
			}
			info := make([]byte, xtSetInfoLen)
			binary.NativeEndian.PutUint16(info[0:], index)
			info[2] = 1 // dim
			switch dir {
			case "src":
				info[3] = 1 << 1 // IPSET_DIM_ONE_SRC, shifted as iptables does
			case "dst":
			default:
				return fmt.Errorf("set %s: unsupported direction %q", name, dir)
			}
			encodeXtMatch(m, "set", 4, info)
		case "comment":
			if len(v) >= xtCommentInfoLen {
				return fmt.Errorf("comment longer than %d", xtCommentInfoLen-1)
			}
			info := make([]byte, xtCommentInfoLen)
			copy(info, v)
			encodeXtMatch(m, "comment", 0, info)
		case "tcp", "udp", "sctp":
			if proto != mt.name {
				return fmt.Errorf("match %s needs -p %s", mt.name, mt.name)
			}
			lo, hi, err := parsePortRange(v)
			if err != nil {
				return err
			}
			if mt.name == "sctp" {
				info := make([]byte, xtSCTPInfoLen)
				binary.NativeEndian.PutUint16(info[0:], lo)
				binary.NativeEndian.PutUint16(info[2:], hi)
				for i := range 4 { // flag_info[].chunktype, as iptables initialises it
					info[268+3*i] = 0xff
				}
				binary.NativeEndian.PutUint32(info[284:], 0x02) // flags: XT_SCTP_DEST_PORTS
				encodeXtMatch(m, "sctp", 0, info)
				continue
			}
			e := beginExpr(m, "payload")
			m.attrBE32(nftaPayloadDreg, nftReg1)
			m.attrBE32(nftaPayloadBase, nftPayloadTransportHeader)
			m.attrBE32(nftaPayloadOffset, 2)
			m.attrBE32(nftaPayloadLen, 2)
			endExpr(m, e)
			if lo == hi {
				encodeCmp(m, binary.BigEndian.AppendUint16(nil, lo))
				continue
			}
			e = beginExpr(m, "range")
			m.attrBE32(nftaRangeSreg, nftReg1)
			m.attrBE32(nftaRangeOp, nftCmpEq)
			encodeData(m, nftaRangeFromData, binary.BigEndian.AppendUint16(nil, lo))
			encodeData(m, nftaRangeToData, binary.BigEndian.AppendUint16(nil, hi))
			endExpr(m, e)
		case "icmp6":
			if f != familyV6 || protoNum != unix.IPPROTO_ICMPV6 {
				return errors.New("match icmp6 needs IPv6 and -p ipv6-icmp")
			}
			typ, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return fmt.Errorf("icmpv6 type %q: only a number is supported", v)
			}
			info := make([]byte, xtICMP6InfoLen)
			info[0], info[1], info[2] = byte(typ), 0, 0xff // type, code range 0-255
			encodeXtMatch(m, "icmp6", 0, info)
		}
	}
	e := beginExpr(m, "counter")
	m.attr(nftaCounterBytes|nlaFNetByteorder, make([]byte, 8))
	m.attr(nftaCounterPackets|nlaFNetByteorder, make([]byte, 8))
	endExpr(m, e)
	e = beginExpr(m, "immediate")
	m.attrBE32(nftaImmediateDreg, nftRegVerdict)
	d := m.nest(nftaImmediateData)
	v := m.nest(nftaDataVerdict)
	switch target {
	case "ACCEPT":
		m.attrBE32(nftaVerdictCode, nfAccept)
	case "DROP":
		m.attrBE32(nftaVerdictCode, nfDrop)
	case "RETURN":
		m.attrBE32(nftaVerdictCode, verdictCode(nftReturn))
	default:
		if !isPodwallChain(target) {
			return fmt.Errorf("unsupported target %q", target)
		}
		m.attrBE32(nftaVerdictCode, verdictCode(nftJump))
		m.attrString(nftaVerdictChain, target)
	}
	m.endNest(v)
	m.endNest(d)
	endExpr(m, e)
	m.endNest(exprs)
	// The rule's protocol, for the xt matches that check it (sctp, icmp6):
	// the kernel keeps no copy, so it is not in what it dumps.
	compat := m.nest(nftaRuleCompat)
	m.attrBE32(nftaRuleCompatProto, uint32(protoNum))
	m.attrBE32(nftaRuleCompatFlags, 0)
	m.endNest(compat)
	return nil
}

func parsePortRange(v string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(v, ":")
	l, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("port %q", v)
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(b, 10, 16); err != nil || h < l {
			return 0, 0, fmt.Errorf("port range %q", v)
		}
	}
	return uint16(l), uint16(h), nil
}

// beginExpr starts one element of the expression list; endExpr closes it.
func beginExpr(m *nlBuilder, name string) [2]int {
	elem := m.nest(nftaListElem)
	m.attrString(nftaExprName, name)
	return [2]int{elem, m.nest(nftaExprData)}
}

func endExpr(m *nlBuilder, e [2]int) {
	m.endNest(e[1])
	m.endNest(e[0])
}

func encodeData(m *nlBuilder, typ uint16, value []byte) {
	d := m.nest(typ)
	m.attr(nftaDataValue, value)
	m.endNest(d)
}

func encodeCmp(m *nlBuilder, value []byte) {
	e := beginExpr(m, "cmp")
	m.attrBE32(nftaCmpSreg, nftReg1)
	m.attrBE32(nftaCmpOp, nftCmpEq)
	encodeData(m, nftaCmpData, value)
	endExpr(m, e)
}

// encodeIfname matches an interface name exactly, as iptables-nft does
// for a name without "+": the name and its terminating NUL.
func encodeIfname(m *nlBuilder, key uint32, name string) {
	e := beginExpr(m, "meta")
	m.attrBE32(nftaMetaKey, key)
	m.attrBE32(nftaMetaDreg, nftReg1)
	endExpr(m, e)
	encodeCmp(m, append([]byte(name), 0))
}

func encodeXtMatch(m *nlBuilder, name string, rev uint32, info []byte) {
	e := beginExpr(m, "match")
	m.attrString(nftaMatchName, name)
	m.attrBE32(nftaMatchRev, rev)
	m.attr(nftaMatchInfo, info)
	endExpr(m, e)
}

// verdictCode is a verdict as the u32 NFTA_VERDICT_CODE carries it.
func verdictCode(v int32) uint32 { return uint32(v) }

// switchErrors are the errors of switching rules, per family on the
// restore path, or one for both families on the netlink path.
type switchErrors []familyError

type familyError struct {
	what     string // "v4", "v6", or "v4+v6"
	err      error
	switched bool // this family's rules did change
}

func (e switchErrors) switched() bool {
	return slices.ContainsFunc(e, func(f familyError) bool { return f.switched })
}

func (e switchErrors) errs() []error {
	var out []error
	for _, f := range e {
		if f.err != nil {
			out = append(out, f.err)
		}
	}
	return out
}

// switchRules turns the podwall part of the filter tables from cur into
// want for the families with change[f]: over nf_tables netlink, both
// families in one transaction, or, when the Manager was made to (for
// comparisons), with one iptables-nft-restore process per family. It
// returns nil when all went well.
func (x *executor) switchRules(want, cur [2]table, change [2]bool) switchErrors {
	if !x.m.restoreRules {
		if err := x.writeTransitions(want, cur, change); err != nil {
			return switchErrors{{what: "v4+v6", err: err}}
		}
		return nil
	}
	var in [2]string
	for _, f := range families {
		if change[f] {
			in[f] = renderTransition(want[f], cur[f])
		}
	}
	results := x.restoreFamilies(in)
	var errs switchErrors
	failed := false
	for _, f := range families {
		errs = append(errs, familyError{what: f.String(), err: results[f], switched: results[f] == nil && in[f] != ""})
		failed = failed || results[f] != nil
	}
	if !failed {
		return nil
	}
	return errs
}
