#!/bin/sh
# build-kubectl.sh builds kubectl v1.34.4 from the k8s.io/kubernetes module
# that test/kube/bins pins, into the cache directory of the test bed's
# Kubernetes binaries, unless it is already there, and prints its path on
# stdout (progress goes to stderr).
#
#   PODWALL_KUBE_BIN_DIR  cache directory (default ~/.cache/podwall/k8s-v1.34.4)
#
# test/kube/bins' go.sum lacks kubectl's own dependencies (cli-runtime,
# kustomize, ...), so the build runs in a scratch copy of that module's
# go.mod and go.sum where -mod=mod may add them: test/kube/bins is left as it
# is. Versions still come from k8s.io/kubernetes' own go.mod. With a warm Go
# build cache (kube-apiserver built) 1-4 min on 2 cores; the first time it
# downloads the missing modules from the Go module proxy.
set -eu

KUBE_VERSION=v1.34.4
here=$(cd "$(dirname "$0")" && pwd)
bins=$(cd "$here/../../kube/bins" && pwd)
dir=${PODWALL_KUBE_BIN_DIR:-${HOME:-/root}/.cache/podwall/k8s-$KUBE_VERSION}

log() { echo "build-kubectl: $*" >&2; }

if [ -x "$dir/kubectl" ]; then
	log "kubectl: already built"
	echo "$dir/kubectl"
	exit 0
fi
mkdir -p "$dir"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/podwall-kubectl-mod-XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
cp "$bins/go.mod" "$bins/go.sum" "$scratch/"

# What `kubectl version --client` reports.
pkg=k8s.io/component-base/version
version_ldflags="-X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=34 -X $pkg.gitTreeState=clean"

log "building kubectl $KUBE_VERSION in a scratch copy of $bins"
start=$(date +%s)
tmp="$dir/.kubectl.tmp.$$"
# Build to a temporary name, then rename: an interrupted build never leaves
# a binary that looks complete.
(cd "$scratch" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -buildvcs=false -trimpath \
	-ldflags="-s -w $version_ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kubectl) || { rm -f "$tmp"; exit 1; }
mv "$tmp" "$dir/kubectl"
log "kubectl: built in $(($(date +%s) - start)) s"
echo "$dir/kubectl"
