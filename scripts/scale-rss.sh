#!/bin/bash
# Control-plane RSS at scale, sampled while it grows: a `kapal server` (with any extra server
# flags), `kapal agent --simulate NODES`, then Deployments of 1,000 replicas until PODS pods are
# available. Prints the server's RSS after start, with the nodes, every ~10 s while pods are
# created, and at the end. The same shape as `kapal-bench workloads --scale-nodes/--scale-pods`,
# with progress. Stops early at MAXRSS MiB (default 6000) or TIMEOUT s (default 1200).
#
# usage: scripts/scale-rss.sh target/release/kapal NODES PODS [server flags...]
set -u
KAPAL=$1; NODES=$2; PODS=$3; shift 3
D=$(mktemp -d /tmp/kapal-scale.XXXX); PORT=$((20000 + RANDOM % 20000))
$KAPAL server --bind-address 127.0.0.1 --https-listen-port $PORT --data-dir $D/data --write-kubeconfig $D/kc "$@" >$D/server.log 2>&1 &
SP=$!
for i in $(seq 100); do [ -f $D/kc ] && break; sleep 0.2; done
export KUBECONFIG=$D/kc
rss() { awk '/VmRSS/{printf "%d", $2/1024}' /proc/$SP/status; }
echo "idle $(rss) MiB"
$KAPAL agent --server https://127.0.0.1:$PORT --token $(cat $D/data/token) --data-dir $D/agent --node-name node --simulate $NODES >$D/agent.log 2>&1 &
AP=$!
t0=$(date +%s)
while [ "$(kubectl get nodes --no-headers 2>/dev/null | wc -l)" -lt $NODES ]; do sleep 2; done
echo "nodes $NODES after $(( $(date +%s)-t0 ))s: $(rss) MiB"
sleep 10; echo "nodes settled: $(rss) MiB"
n=$(( (PODS+999)/1000 ))
for i in $(seq 0 $((n-1))); do
  r=$(( PODS - i*1000 )); [ $r -gt 1000 ] && r=1000
  kubectl create deployment scale-$i --image=registry.local/pause:1 --replicas=$r >/dev/null
done
t0=$(date +%s)
while true; do
  a=$(kubectl get deploy -o jsonpath='{range .items[*]}{.status.availableReplicas}{"\n"}{end}' | awk '{s+=$1} END{print s+0}')
  echo "$(( $(date +%s)-t0 ))s available=$a rss=$(rss) MiB agent=$(awk '/VmRSS/{printf "%d", $2/1024}' /proc/$AP/status)"
  [ "$a" -ge "$PODS" ] && break
  [ $(( $(date +%s)-t0 )) -gt ${TIMEOUT:-1200} ] && break
  R=$(rss); [ "$R" -gt ${MAXRSS:-6000} ] && { echo "rss cap"; break; }
  sleep 10
done
sleep 10; echo "final: $(rss) MiB"
kill $AP $SP; wait 2>/dev/null
rm -rf "$D"
