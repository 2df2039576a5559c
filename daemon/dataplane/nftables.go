package dataplane

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// nf_tables netlink, the little podwall needs of it: which families have a
// filter table at all. A pod netns the ENI plugin just made has none, and
// then there is nothing for iptables-nft-save to print — a process start
// (~10 ms here) saved per family on every CNI ADD.

// filterTables reports, per family, whether the netns has an nf_tables
// table named "filter" (where iptables-nft keeps its filter table).
func (c *ipsetConn) filterTables() ([2]bool, error) {
	var has [2]bool
	var m nlBuilder
	c.seq++
	m.beginNfnl(unix.NFNL_SUBSYS_NFTABLES, nftMsgGetTable, unix.NFPROTO_UNSPEC, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, c.seq)
	m.end()
	if err := c.send(m.b); err != nil {
		return has, err
	}
	err := c.receive(c.seq, func(family uint8, attrs []byte) error {
		if cString(parseAttrs(attrs)[nftaTableName]) != "filter" {
			return nil
		}
		switch family {
		case unix.NFPROTO_IPV4:
			has[familyV4] = true
		case unix.NFPROTO_IPV6:
			has[familyV6] = true
		}
		return nil
	}, func(errno unix.Errno) error {
		if errno != 0 {
			return fmt.Errorf("list nf_tables tables: %w", errno)
		}
		return nil
	})
	return has, err
}
