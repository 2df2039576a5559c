// Command cni-plugins builds the reference CNI plugins the test bed needs
// (ptp, host-local, loopback) into a directory, from the
// containernetworking/plugins module at the version podwall's go.mod
// requires. Binaries already there are kept.
//
//	go run ./test/cmd/cni-plugins -dir bin/cni
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/podwall/podwall/test/bed"
)

func main() {
	dir := flag.String("dir", "bin/cni", "directory to put the plugins in")
	flag.Parse()
	if err := bed.BuildCNIPlugins(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "cni-plugins:", err)
		os.Exit(1)
	}
}
