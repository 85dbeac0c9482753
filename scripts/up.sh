#!/usr/bin/env bash
# Builds and runs a one-node Kapal cluster (`kapal up`), installing the one build tool the
# build needs when it is missing: protoc (Debian protobuf-compiler, used by etcd-client).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler
  else
    echo "error: protoc is missing: install the protobuf-compiler package (sudo apt-get install protobuf-compiler)" >&2
    exit 1
  fi
fi
exec cargo run --release -p kapal -- up "$@"
