#!/bin/bash
# Instructions per proxied request: a count that, unlike latency and throughput on a shared
# machine, does not move with the neighbours, for before/after comparisons of proxy changes.
#
#   scripts/proxy-instructions.sh [PROXY...]
#
# Each PROXY is a `kapal` executable (default: target/release/kapal) or the word `haproxy`
# (Debian's, one thread, the same configuration as kapal-bench's). Each runs under callgrind in
# front of nginx (answering "ok" over HTTP/1.1 and over HTTP/2 without TLS) and serves h2load's
# requests on one keep-alive connection, one at a time: first 500, then 2,500. The difference of
# the two totals, divided by 2,000, is what one more request costs in user space (startup and
# connection set-up cancel out); system calls and the kernel's side are not counted. The proxy
# is kept to one CPU (taskset), as kapal-bench keeps it: `kapal proxy` then runs its
# single-threaded runtime.
#
# Needs valgrind, h2load (Debian nghttp2-client), nginx and python3; haproxy for `haproxy`.
# Only loopback addresses are used; everything started is stopped and removed at the end
# (the work directory kept with KEEP=1, with each run's callgrind.PROXY.PROTO.N.out for
# callgrind_annotate, the PROXY's slashes made underscores).
set -euo pipefail
cd "$(dirname "$0")/.."
proxies=("$@")
((${#proxies[@]})) || proxies=(target/release/kapal)
# shellcheck source=scripts/common.sh
source scripts/common.sh
need valgrind callgrind_annotate h2load nginx python3 taskset
one_cpu=(taskset -c "$(python3 -c 'import os; print(min(os.sched_getaffinity(0)))')")

H1=$(port) H2=$(port)
mkdir -p "$W/nginx/logs"
cat >"$W/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
error_log stderr crit;
pid $W/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx/body;
  proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fcgi;
  uwsgi_temp_path $W/nginx/uwsgi;
  scgi_temp_path $W/nginx/scgi;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$H1; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$H2 http2; location / { return 200 "ok"; } }
}
EOF
nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" &
pids+=($!)
listening "$H1"
listening "$H2"

# Total instructions of PROXY while it serves N requests of PROTO (h1 or h2). It runs in a
# command substitution (a subshell): the proxy it starts is stopped here on every path.
instructions() {
  local proxy=$1 proto=$2 n=$3 listen admin backend out v=
  out=$W/callgrind.${proxy//\//_}.$proto.$n.out
  trap '[[ -z $v ]] || { kill -TERM "$v" 2>/dev/null; wait "$v" 2>/dev/null; }' RETURN
  listen=$(port)
  admin=$(port)
  while [[ $admin == "$listen" ]]; do admin=$(port); done
  backend=$([[ $proto == h2 ]] && echo "$H2" || echo "$H1")
  rm -f "$out"
  if [[ $proxy == haproxy ]]; then
    local h2=""
    [[ $proto == h2 ]] && h2=" proto h2"
    printf 'global\n  nbthread 1\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:%s%s\n  default_backend b\nbackend b\n  server app 127.0.0.1:%s%s\n' \
      "$listen" "$h2" "$backend" "$h2" >"$W/haproxy.cfg"
    "${one_cpu[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" /usr/sbin/haproxy -f "$W/haproxy.cfg" >/dev/null 2>&1 &
  else
    local protocol
    protocol=$([[ $proto == h2 ]] && echo http2 || echo http1)
    printf 'apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\nservices:\n  - {name: app, listen: "127.0.0.1:%s", protocol: %s, endpoints: [{address: "127.0.0.1:%s"}]}\n' \
      "$listen" "$protocol" "$backend" >"$W/proxy.yaml"
    "${one_cpu[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" "$proxy" proxy --config "$W/proxy.yaml" \
      --admin "127.0.0.1:$admin" >/dev/null 2>&1 &
  fi
  v=$!
  listening "$listen" || return 1
  local h1flag=() result
  [[ $proto == h1 ]] && h1flag=(--h1)
  result=$(h2load "${h1flag[@]}" -n "$n" -c 1 -m 1 "http://127.0.0.1:$listen/" 2>&1) || true
  if [[ $result != *"$n succeeded"* ]]; then
    echo "h2load: not all $n $proto requests through $proxy succeeded" >&2
    return 1
  fi
  # Both stop on SIGTERM (HAProxy ignores SIGINT); callgrind writes its counts at exit.
  kill -TERM "$v"
  wait "$v" 2>/dev/null || true
  v=
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}'
}

printf '| proxy | HTTP/1.1 instructions per request | HTTP/2 instructions per request |\n|---|---|---|\n'
for proxy in "${proxies[@]}"; do
  row="| $proxy |"
  for proto in h1 h2; do
    a=$(instructions "$proxy" "$proto" 500)
    b=$(instructions "$proxy" "$proto" 2500)
    [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || { echo "no instruction count for $proxy ($proto)" >&2; exit 1; }
    row+=" $(((b - a) / 2000)) |"
  done
  echo "$row"
done
