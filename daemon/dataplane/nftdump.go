package dataplane

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Reading nf_tables objects back over netlink: the rules of a chain (to
// find the handles of the jumps a transition deletes) and, for tests, the
// tables, chains and rules exactly as the kernel holds them.

// nftRule is one rule as the kernel dumps it.
type nftRule struct {
	chain    string
	handle   uint64
	exprs    []byte // NFTA_RULE_EXPRESSIONS
	userdata []byte // NFTA_RULE_USERDATA
	compat   []byte // NFTA_RULE_COMPAT
}

// nftChain is one chain as the kernel dumps it.
type nftChain struct {
	name   string
	attrs  map[uint16][]byte
	handle uint64
}

// dumpNft dumps the objects of message type msg (NFT_MSG_GETTABLE,
// GETCHAIN, GETRULE) of family f's filter table; chain, when not empty,
// limits a rule dump to that chain.
func (c *ipsetConn) dumpNft(f family, msg int, chain string, onData func(attrs map[uint16][]byte) error) error {
	var m nlBuilder
	c.seq++
	m.beginNfnl(unix.NFNL_SUBSYS_NFTABLES, msg, nfproto(f), unix.NLM_F_REQUEST|unix.NLM_F_DUMP, c.seq)
	if msg == nftMsgGetRule {
		m.attrString(nftaRuleTable, nftTableFilter)
		if chain != "" {
			m.attrString(nftaRuleChain, chain)
		}
	}
	m.end()
	if err := c.send(m.b); err != nil {
		return err
	}
	return c.receive(c.seq, func(family uint8, attrs []byte) error {
		if family != nfproto(f) {
			return nil
		}
		a := parseAttrs(attrs)
		if msg != nftMsgGetTable && cString(a[nftaRuleTable]) != nftTableFilter {
			return nil // NFTA_CHAIN_TABLE and NFTA_RULE_TABLE are both 1
		}
		if msg == nftMsgGetTable && cString(a[nftaTableName]) != nftTableFilter {
			return nil
		}
		return onData(a)
	}, func(errno unix.Errno) error {
		if errno != 0 && errno != unix.ENOENT {
			return fmt.Errorf("dump nf_tables %s filter (message %d): %w", f, msg, errno)
		}
		return nil
	})
}

// nftRules returns the rules of chain (every chain when "") in family f's
// filter table, in order.
func (c *ipsetConn) nftRules(f family, chain string) ([]nftRule, error) {
	var rules []nftRule
	err := c.dumpNft(f, nftMsgGetRule, chain, func(a map[uint16][]byte) error {
		r := nftRule{chain: cString(a[nftaRuleChain]), exprs: a[nftaRuleExpressions], userdata: a[nftaRuleUserdata], compat: a[nftaRuleCompat]}
		if h := a[nftaRuleHandle]; len(h) == 8 {
			r.handle = binary.BigEndian.Uint64(h)
		}
		rules = append(rules, r)
		return nil
	})
	return rules, err
}

// nftChains returns the chains of family f's filter table.
func (c *ipsetConn) nftChains(f family) ([]nftChain, error) {
	var chains []nftChain
	err := c.dumpNft(f, nftMsgGetChain, "", func(a map[uint16][]byte) error {
		ch := nftChain{name: cString(a[nftaChainName]), attrs: a}
		if h := a[nftaChainHandle]; len(h) == 8 {
			ch.handle = binary.BigEndian.Uint64(h)
		}
		chains = append(chains, ch)
		return nil
	})
	return chains, err
}

func nfproto(f family) uint8 {
	if f == familyV6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}
