#!/usr/bin/env bash
# Installs the Debian packages podwall's dataplane, tests and demo need, when
# missing. Idempotent; needs root (CI and the demo run as root).
set -euo pipefail
need=()
command -v iptables-nft-restore >/dev/null || need+=(iptables)
command -v ipset >/dev/null || need+=(ipset)
command -v ip >/dev/null || need+=(iproute2)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
command -v conntrack >/dev/null || need+=(conntrack)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
	echo "warning: not root: the privileged tests will skip and the demo cannot run" >&2
fi
