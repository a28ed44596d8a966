#!/usr/bin/env bash
# Start/stop a throw-away single-node Kubernetes control plane on 127.0.0.1:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok (fake kubelet).
# usage: k8s-local.sh up|down|status|restart-apiserver [PAUSE_SECONDS]
# env:   K8S_BIN (binaries), K8S_WORK (state dir), K8S_ETCD_PORT, K8S_API_PORT, KWOK_NODES, WITH_CONTROLLERS
set -euo pipefail
BIN=${K8S_BIN:-$PWD/.deps/k8s}
WORK=${K8S_WORK:-$PWD/.deps/run}
ETCD_PORT=${K8S_ETCD_PORT:-23790}   # not ETCD_*: etcd reads ETCD_* env vars as flags
PEER_PORT=$((ETCD_PORT + 1))
API_PORT=${K8S_API_PORT:-16443}
KWOK_NODES=${KWOK_NODES:-1}
WITH_CONTROLLERS=${WITH_CONTROLLERS:-1}   # 0 = etcd+apiserver only (envtest-like)
KC="$WORK/kubeconfig"
KUBECTL=${KUBECTL:-$( [[ -x $BIN/kubectl ]] && echo "$BIN/kubectl" || command -v kubectl )}

log() { printf '[k8s-local %s] %s\n' "$(date +%T)" "$*" >&2; }

start() { # name, cmd...
  local name=$1; shift
  "$@" >"$WORK/logs/$name.log" 2>&1 &
  echo $! >"$WORK/$name.pid"
}

wait_for() { # desc, timeout_s, cmd...
  local desc=$1 t=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    local f; for f in "$WORK"/*.pid; do [[ -e $f ]] || continue
      kill -0 "$(cat "$f")" 2>/dev/null || { log "$(basename "$f" .pid) exited while waiting for $desc"; tail -n 30 "$WORK/logs/$(basename "$f" .pid).log" >&2; return 1; }
    done
    if ((SECONDS >= end)); then log "timeout waiting for $desc"; tail -n 30 "$WORK"/logs/*.log >&2 || true; return 1; fi
    sleep 0.2
  done
}

api() { curl -sfk -H "Authorization: Bearer $(cat "$WORK/token")" "https://127.0.0.1:$API_PORT$1"; }

apiserver() { # start kube-apiserver and wait until it is ready
  log "starting kube-apiserver on 127.0.0.1:$API_PORT"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --endpoint-reconciler-type none \
    --cert-dir "$WORK/certs" --token-auth-file "$WORK/certs/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$WORK/certs/sa.pub" \
    --service-account-signing-key-file "$WORK/certs/sa.key" \
    --service-cluster-ip-range "${K8S_SERVICE_CIDR:-127.0.200.0/24}" \
    --profiling=false
  wait_for kube-apiserver 90 api /readyz
  log "kube-apiserver ready"
}

up() {
  down >/dev/null 2>&1 || true
  rm -rf "$WORK"; mkdir -p "$WORK"/{etcd,certs,logs}
  openssl genrsa -out "$WORK/certs/sa.key" 2048 2>/dev/null
  openssl rsa -in "$WORK/certs/sa.key" -pubout -out "$WORK/certs/sa.pub" 2>/dev/null
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
  echo "$(cat "$WORK/token"),admin,admin,system:masters" >"$WORK/certs/tokens.csv"
  cat >"$KC" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $(cat "$WORK/token")
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
EOF

  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  start etcd "$BIN/etcd" --name default --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  apiserver
  [[ $WITH_CONTROLLERS == 1 ]] || return 0

  log "starting kube-controller-manager, kube-scheduler, kwok"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KC" \
    --leader-elect=false --secure-port 0 \
    --controllers deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,node-lifecycle-controller \
    --service-account-private-key-file "$WORK/certs/sa.key"
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KC" --leader-elect=false --secure-port 0
  # kwok needs Stage definitions; they ship inside the kwok module (kustomize/stage/...).
  local kd=${KWOK_STAGES_DIR:-$BIN/kwok-stages} f
  for f in node-initialize.yaml node-heartbeat-with-lease.yaml pod-create.yaml pod-ready.yaml pod-complete.yaml pod-delete.yaml; do
    if [[ ${KWOK_FAST:-1} == 1 && $f == pod-* ]]; then
      # default pod stages wait 1s + up to 5s jitter, and pod-delete waits until the
      # deletionTimestamp (= terminationGracePeriodSeconds, 30s by default); zero both for
      # fast tests (per-pod annotations such as pod-ready.stage.kwok.x-k8s.io/delay: 10s still apply)
      sed -E -e 's/(d|jitterD)urationMilliseconds: [0-9]+/\1urationMilliseconds: 0/' \
             -e '/jitterDurationFrom:/{N;/deletionTimestamp/d}' "$kd/$f"
    else cat "$kd/$f"; fi
    echo "---"
  done >"$WORK/kwok-stages.yaml"
  # --node-lease-duration-seconds: kwok renews the node Lease (the heartbeat-with-lease stage
  # relies on it); without it the node turns NotReady after ~50s and the node-lifecycle
  # controller flips every pod's Ready condition to False for good.
  start kwok "$BIN/kwok" --kubeconfig "$KC" --config "$WORK/kwok-stages.yaml" --node-lease-duration-seconds 40 \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr "${KWOK_POD_CIDR:-127.0.100.0/24}" --node-ip "${KWOK_NODE_IP:-127.0.100.254}"

  for i in $(seq 0 $((KWOK_NODES - 1))); do
    cat <<EOF | "$KUBECTL" --kubeconfig "$KC" apply -f - >/dev/null
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
  done
  wait_for "node Ready" 60 bash -c "'$KUBECTL' --kubeconfig '$KC' wait --for=condition=Ready node --all --timeout=1s"
  # the node-lifecycle controller removes the node.kubernetes.io/not-ready taint once kwok reports Ready
  wait_for "node taints cleared" 60 bash -c "[[ -z \$('$KUBECTL' --kubeconfig '$KC' get nodes -o jsonpath='{.items[*].spec.taints}') ]]"
  wait_for "default ServiceAccount" 60 "$KUBECTL" --kubeconfig "$KC" get serviceaccount default -n default
  log "cluster ready: export KUBECONFIG=$KC"
}

alive() { # true while any pid still runs (a zombie awaiting its reaper counts as gone)
  local p; for p in "$@"; do
    [[ -e /proc/$p && $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] && return 0
  done; return 1; }

down() { # TERM everything at once, give it 3s, then KILL (state is thrown away anyway)
  local n pids=()
  for n in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [[ -f $WORK/$n.pid ]] && pids+=("$(cat "$WORK/$n.pid")") && rm -f "$WORK/$n.pid"
  done
  ((${#pids[@]})) || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 30); do alive "${pids[@]}" || break; sleep 0.1; done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

status() { for n in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  if [[ -f $WORK/$n.pid ]] && kill -0 "$(cat "$WORK/$n.pid")" 2>/dev/null; then
    echo "$n: running pid $(cat "$WORK/$n.pid") rss=$(ps -o rss= -p "$(cat "$WORK/$n.pid")")KB"
  else echo "$n: stopped"; fi; done; }

restart_apiserver() { # an API-server outage: stop kube-apiserver, wait $2 s (default 0), start it again
  local pid; pid=$(cat "$WORK/kube-apiserver.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do alive "$pid" || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  log "kube-apiserver stopped"
  sleep "${1:-0}"
  apiserver
}

case ${1:-} in
  up) trap 'rc=$?; ((rc == 0)) || down' EXIT; up ;; down) down ;; status) status ;;
  restart-apiserver) restart_apiserver "${2:-0}" ;;
  *) echo "usage: $0 up|down|status|restart-apiserver [PAUSE_SECONDS]" >&2; exit 2 ;;
esac
