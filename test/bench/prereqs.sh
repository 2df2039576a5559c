#!/usr/bin/env bash
# Installs what `make bench` needs beyond test/prereqs.sh, when missing:
# wrk (the HTTP load generator of the datapath benchmark) and gnuplot-nox
# (the plots). Idempotent; needs root.
set -euo pipefail
bash "$(dirname "$0")/../prereqs.sh"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
