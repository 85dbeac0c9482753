#!/bin/bash
# Where the control plane's memory goes at scale: builds `kapal` with jemalloc's heap profiler
# (feature `profiling`, no LTO, line tables) into its own target dir, runs scripts/scale-rss.sh
# with sampling on (one sample per 512 KiB allocated, a dump per 4 GiB allocated), and prints the
# live bytes of the last dump before shutdown by the Kapal function that allocated them.
#
# usage: scripts/heap-profile.sh NODES PODS [server flags...]   (output in $OUT, default /tmp/kapal-heap)
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=$1; PODS=$2; shift 2
OUT=${OUT:-/tmp/kapal-heap}; TARGET=${TARGET:-/tmp/kapal-heap-target}
rm -rf "$OUT"; mkdir -p "$OUT"
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=1 \
  cargo build --release -p kapal --features profiling --target-dir "$TARGET"
KAPAL=$TARGET/release/kapal
# jeprof ships with jemalloc's sources (tikv-jemalloc-sys), with the symbol prefix of the crate.
SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tikv-jemalloc-sys-*/jemalloc/bin | tail -1)
sed -e 's/@jemalloc_version@/5.3.0/' -e 's/@JEMALLOC_PREFIX@/_rjem_/' "$SRC/jeprof.in" >"$OUT/jeprof"
chmod +x "$OUT/jeprof"
_RJEM_MALLOC_CONF=prof:true,lg_prof_sample:19,lg_prof_interval:32,prof_prefix:$OUT/k \
  scripts/scale-rss.sh "$KAPAL" "$NODES" "$PODS" "$@" | tee "$OUT/scale.log"
# The server is the process with the most dumps (the agent allocates far less).
pid=$(ls "$OUT" | sed -n 's/^k\.\([0-9]*\)\..*heap$/\1/p' | sort | uniq -c | sort -rn | awk 'NR==1{print $2}')
last=$(ls -v "$OUT"/k."$pid".*.i*.heap | tail -1)
echo "== live memory in $last, by Kapal function (cumulative)"
"$OUT/jeprof" --text --cum --inuse_space "$KAPAL" "$last" 2>/dev/null | grep -E '^ *Total|kapal_' | head -40
