package syncer

import gosync "sync"

// maxParallelApplies bounds the applies one sync runs at once. An apply
// mostly waits for the kernel (netlink transactions, an iptables-nft-save
// process when a netns is not remembered), so a few in flight overlap that
// waiting without flooding the node.
const maxParallelApplies = 8

// forEachParallel calls fn(i) for every i in [0, n), at most limit calls at
// once, and returns when every call has returned.
func forEachParallel(n, limit int, fn func(i int)) {
	limit = max(min(limit, n), 1)
	next := make(chan int)
	var wg gosync.WaitGroup
	for range limit {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
