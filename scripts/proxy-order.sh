#!/bin/bash
# Regenerates crates/kapal/proxy.order, the symbol ordering file that lays out the code
# `kapal proxy` runs first and together in release builds (see crates/kapal/build.rs).
#
# It builds `kapal` as the README does (`--release -p kapal`: symbol names carry hashes of the
# crates' build settings, so the list is only good for binaries built the same way), then runs
# it under callgrind, with a mesh identity and the admin probes:
#   1. start and idle: one proxy, probed on /ready, /live and /metrics, once on the
#      single-threaded runtime (`--threads 1`, a sidecar with one CPU) and once on the
#      multi-threaded one;
#   2. traffic: a client-side proxy (a plain service and a meshed one) and a server-side proxy
#      (inbound, mutual TLS required) in front of a Python backend, HTTP/1.1 and HTTP/2
#      requests; twice, each side once on each runtime.
# The file lists what (1) ran, then what only (2) ran. `scripts/proxy-order.sh --check` instead
# reports how many of the listed names today's release binary still has. KEEP=1 keeps the work
# directory (profiles, logs) for a look.
#
# Needs valgrind, openssl, curl, nginx, nm (binutils) and python3. Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
ORDER=crates/kapal/proxy.order
cargo build --release -p kapal
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
KAPAL=$TARGET_DIR/release/kapal

if [[ ${1:-} == --check ]]; then
  total=$(wc -l <"$ORDER")
  found=$(nm --defined-only "$KAPAL" | awk 'NR==FNR{want[$1]=1; next} ($3 in want) && !seen[$3]++{n++} END{print n+0}' "$ORDER" -)
  echo "$found of $total names in $ORDER are in $KAPAL"
  exit 0
fi

# shellcheck source=scripts/common.sh
source scripts/common.sh
need valgrind openssl curl nginx python3

# Mesh identities: a CA and one SPIFFE leaf per side, as the control plane would write them.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mesh-ca -days 1 \
  -keyout "$W/ca.key" -out "$W/ca.pem" 2>/dev/null
for sa in client server; do
  mkdir -p "$W/$sa"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$sa" \
    -keyout "$W/$sa/key.pem" -out "$W/$sa.csr" 2>/dev/null
  printf 'subjectAltName=URI:spiffe://cluster.local/ns/order/sa/%s\n' "$sa" >"$W/$sa.ext"
  openssl x509 -req -in "$W/$sa.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -days 1 \
    -extfile "$W/$sa.ext" -out "$W/$sa/cert.pem" 2>/dev/null
  cp "$W/ca.pem" "$W/$sa/ca.pem"
done

APP=$(port)
python3 - "$APP" <<'EOF' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) or b"hello\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
pids+=($!)
# An HTTP/2 (h2c) backend, for the proxy's HTTP/2 client.
H2APP=$(port)
mkdir -p "$W/nginx/tmp"
printf 'daemon off; pid nginx.pid; error_log nginx.err;\nevents {}\nhttp { access_log off; client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  server { listen 127.0.0.1:%s http2; location / { return 200 "hello\\n"; } } }\n' "$H2APP" >"$W/nginx/nginx.conf"
nginx -p "$W/nginx" -e "$W/nginx/nginx.err" -c "$W/nginx/nginx.conf" &
pids+=($!)
listening "$APP"
listening "$H2APP"

# Runs `kapal proxy` under callgrind in the background: NAME CONFIG IDENTITY ADMIN THREADS
proxy() {
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$W/$1.cg" \
    "$KAPAL" proxy --config "$2" --identity-dir "$3" --admin "127.0.0.1:$4" --drain-timeout 1s \
    --threads "$5" >"$W/$1.log" 2>&1 &
  pids+=($!)
}
ready() {
  for _ in $(seq 300); do curl -sf "127.0.0.1:$1/ready" >/dev/null && return; sleep 0.1; done
  echo "proxy on admin port $1 did not become ready" >&2
  exit 1
}
# Stops a proxy (callgrind writes its profile as it exits) and forgets its pid.
stop() {
  kill -TERM "$1" 2>/dev/null || echo "proxy $1 had already stopped; see its log (KEEP=1 keeps $W)" >&2
  wait "$1" || true
  local rest=() p
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || rest+=("$p"); done
  pids=("${rest[@]}")
}
HEAD='apiVersion: kapal.dev/v1alpha1
kind: ProxyConfig'

# 1. Start and idle.
IDLE=$(port) IDLE_ADMIN=$(port)
printf '%s\nservices:\n  - {name: app, listen: "127.0.0.1:%s", protocol: http1, endpoints: [{address: "127.0.0.1:%s"}]}\n' \
  "$HEAD" "$IDLE" "$APP" >"$W/idle.yaml"
for threads in 1 2; do
  proxy "idle$threads" "$W/idle.yaml" "$W/server" "$IDLE_ADMIN" "$threads"
  ready "$IDLE_ADMIN"
  for _ in 1 2 3; do
    sleep 2
    for path in ready live metrics; do curl -sf "127.0.0.1:$IDLE_ADMIN/$path" >/dev/null; done
  done
  stop "${pids[-1]}"
done

# 2. Traffic through a mesh pair and a plain service.
PLAIN=$(port) H2=$(port) OUT=$(port) IN=$(port) CADMIN=$(port) SADMIN=$(port)
printf '%s\ninbound: [{listen: "127.0.0.1:%s", forwardPort: %s, requireMtls: true}]\n' \
  "$HEAD" "$IN" "$APP" >"$W/server.yaml"
printf '%s\nservices:\n  - {name: app, listen: "127.0.0.1:%s", protocol: http1, endpoints: [{address: "127.0.0.1:%s"}]}
  - {name: h2, listen: "127.0.0.1:%s", protocol: http2, endpoints: [{address: "127.0.0.1:%s"}]}
  - {name: mesh, listen: "127.0.0.1:%s", protocol: http1,
     endpoints: [{address: "127.0.0.1:%s", identity: "spiffe://cluster.local/ns/order/sa/server"}]}\n' \
  "$HEAD" "$PLAIN" "$APP" "$H2" "$H2APP" "$OUT" "$IN" >"$W/client.yaml"
# Each side once on each runtime: tokio's glue code differs between them.
for threads in "2 1" "1 2"; do
  read -r server_threads client_threads <<<"$threads"
  proxy "server$server_threads" "$W/server.yaml" "$W/server" "$SADMIN" "$server_threads"
  server=${pids[-1]}
  proxy "client$client_threads" "$W/client.yaml" "$W/client" "$CADMIN" "$client_threads"
  client=${pids[-1]}
  ready "$SADMIN"
  ready "$CADMIN"
  for target in "$PLAIN" "$OUT" "$H2"; do
    urls=()
    for i in $(seq 40); do urls+=("http://127.0.0.1:$target/r$i"); done
    curl -sf "${urls[@]}" >/dev/null
    curl -sf -d 'a body' "${urls[@]:0:10}" >/dev/null
    # One request per HTTP/2 connection: curl 7.88 fails (exit 16) reusing a prior-knowledge one.
    for url in "${urls[@]:0:10}"; do
      curl -sSf --http2-prior-knowledge "$url" >/dev/null
      curl -sf --http2-prior-knowledge -d 'a body' "$url" >/dev/null
    done
  done
  curl -sf "127.0.0.1:$CADMIN/metrics" >/dev/null
  stop "$client"
  stop "$server"
done

python3 - "$W" >"$W/order" <<'EOF'
import re, sys
def ran(path):
    """Functions of the kapal executable that ran, from a callgrind profile."""
    objs, names, out, ob = {}, {}, set(), ""
    for line in open(path):
        m = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(3):
                objs[m.group(2)] = m.group(3).strip()
            if m.group(1) == "ob":
                ob = objs.get(m.group(2), "")
            continue
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(3):
                names[m.group(2)] = re.sub(r"'\d+$", "", m.group(3).strip())
            if m.group(1) == "fn" and ob.endswith("/kapal") and not names[m.group(2)].startswith(("0x", "(")):
                out.add(names[m.group(2)])
    return out
w = sys.argv[1]
idle = ran(f"{w}/idle1.cg") | ran(f"{w}/idle2.cg")
traffic = set().union(*(ran(f"{w}/{side}{n}.cg") for side in ("client", "server") for n in (1, 2)))
print("\n".join(sorted(idle) + sorted(traffic - idle)))
print(f"{len(idle)} functions at start and idle, {len(traffic - idle)} more with traffic", file=sys.stderr)
EOF
[[ -s $W/order ]] || { echo "no functions found in the profiles" >&2; exit 1; }
mv "$W/order" "$ORDER"
echo "wrote $ORDER; relink with: cargo build --release -p kapal"
