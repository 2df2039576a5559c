# podwall's node image: podwalld, podwallctl and the podwall CNI plugin on
# Debian slim with iptables (nf_tables backend) and ipset.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t REGISTRY/podwall:TAG .
#
# The binaries are what `make build` produces (bin/podwall, bin/podwalld,
# bin/podwallctl), built static (CGO_ENABLED=0): install-cni copies the
# plugin onto the host, whose libc is not the image's.

FROM golang:1.26-bookworm AS build
ENV CGO_ENABLED=0
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN make build VERSION=${VERSION}

FROM debian:bookworm-slim
# iptables 1.8.9 brings iptables-nft-restore and ip6tables-nft-restore, which
# podwalld runs inside pod network namespaces (never iptables-legacy, whose
# host-wide lock would fight kube-proxy).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/bin/podwall /src/bin/podwalld /src/bin/podwallctl /usr/local/bin/
CMD ["podwalld", "--help"]
