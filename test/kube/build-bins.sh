#!/bin/sh
# build-bins.sh builds the Kubernetes binaries podwall's cluster test bed runs
# (kube-apiserver, kube-controller-manager, kube-proxy, from k8s.io/kubernetes
# v1.34.4 through the nested module test/kube/bins) into a cache directory,
# skipping those already there, installs Debian's etcd-server when etcd is
# missing, and prints the cache directory on stdout (progress goes to stderr).
#
#   PODWALL_KUBE_BIN_DIR  cache directory (default ~/.cache/podwall/k8s-v1.34.4)
#   PODWALL_SKIP_ETCD=1   do not install etcd-server
#
# With an empty Go build cache on 2 cores: kube-apiserver 5-15 min,
# kube-controller-manager 1-5 min more, kube-proxy under a minute; ~260 MB.
set -eu

KUBE_VERSION=v1.34.4
here=$(cd "$(dirname "$0")" && pwd)
dir=${PODWALL_KUBE_BIN_DIR:-${HOME:-/root}/.cache/podwall/k8s-$KUBE_VERSION}

log() { echo "build-bins: $*" >&2; }

ensure_etcd() {
	if command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ]; then
		return
	fi
	if [ "${PODWALL_SKIP_ETCD:-}" = 1 ]; then
		log "etcd missing and PODWALL_SKIP_ETCD=1: not installing etcd-server"
		return
	fi
	if [ "$(id -u)" != 0 ]; then
		log "etcd missing: run as root, or apt-get install etcd-server yourself"
		exit 1
	fi
	log "installing etcd-server (Debian)"
	# Keep the package's own etcd service from starting: the test bed runs
	# its own etcd on free loopback ports.
	policy=/usr/sbin/policy-rc.d
	had_policy=false
	[ -e "$policy" ] && had_policy=true
	if ! $had_policy; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
	fi
	rc=0
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2; } || rc=$?
	$had_policy || rm -f "$policy"
	[ "$rc" = 0 ] || { log "apt-get install etcd-server failed"; exit "$rc"; }
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now etcd.service >/dev/null 2>&1 || true
	fi
}

ensure_etcd

# What `kube-apiserver --version` and the /version endpoint report.
pkg=k8s.io/component-base/version
version_ldflags="-X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=34 -X $pkg.gitTreeState=clean"

mkdir -p "$dir"
cd "$here/bins"
for cmd in kube-apiserver kube-controller-manager kube-proxy; do
	if [ -x "$dir/$cmd" ]; then
		log "$cmd: already built"
		continue
	fi
	log "building $cmd $KUBE_VERSION (kube-apiserver: 5-15 min with a cold Go build cache)"
	start=$(date +%s)
	# Build to a temporary name, then rename: an interrupted build never
	# leaves a binary that looks complete.
	CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags="-s -w $version_ldflags" -o "$dir/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
	mv "$dir/.$cmd.tmp" "$dir/$cmd"
	log "$cmd: built in $(($(date +%s) - start)) s"
done
echo "$dir"
