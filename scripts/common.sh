# Sourced by scripts/proxy-order.sh and scripts/proxy-instructions.sh: the tools a script needs,
# a work directory `W` removed at exit (kept with KEEP=1) together with the processes listed in
# `pids`, and free loopback ports.

# Exits with a message naming the first of the given tools that is missing.
need() {
  for tool; do
    command -v "$tool" >/dev/null || { echo "$(basename "$0") needs $tool" >&2; exit 1; }
  done
}

W=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ ${KEEP:-0} != 0 ]]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# A loopback port free at the time of asking.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until something listens on 127.0.0.1:$1 (up to 30 s: a program under valgrind starts
# slowly); fails otherwise.
listening() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}
