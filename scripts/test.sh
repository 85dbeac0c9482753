#!/usr/bin/env bash
# Runs every Kapal test. Installs what the build and tests need first, when it is missing:
# protoc (Debian protobuf-compiler, for etcd-client), etcd (etcd-server), curl, nftables (the
# proxy's redirect test), and the official Python Kubernetes client (PyPI).
# Real kubectl is taken from /usr/bin/kubectl and /usr/lib/google-cloud-sdk/bin/kubectl.1.NN.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -x /usr/bin/etcd ] || missing+=(etcd-server)
command -v curl >/dev/null || missing+=(curl)
command -v nft >/dev/null || missing+=(nftables)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "warning: missing ${missing[*]}; some tests will be skipped" >&2
  fi
fi
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  python3 -m pip install -q kubernetes 2>/dev/null || python3 -m pip install -q --break-system-packages kubernetes ||
    echo "warning: could not install the Python kubernetes client; its test will be skipped" >&2
fi
command -v kubectl >/dev/null || ls /usr/lib/google-cloud-sdk/bin/kubectl.1.* >/dev/null 2>&1 ||
  echo "warning: no kubectl found; the kubectl end-to-end tests will fail" >&2

cargo build --workspace --all-targets
cargo test --workspace -- --test-threads "${KAPAL_TEST_THREADS:-2}"
