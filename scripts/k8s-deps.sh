#!/usr/bin/env bash
# Build (once) and cache the binaries for local Kubernetes API tests:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (+ kwok stage YAMLs).
# Everything comes from the Go module proxy; nothing is downloaded from release pages.
# usage: hack/k8s-deps.sh            -> prints the bin dir (.deps/bin) on stdout
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.37.2}     # k8s.io/kubernetes v1.37.2 <-> staging modules v0.37.2
ETCD_VERSION=${ETCD_VERSION:-3.7.3}
KWOK_VERSION=${KWOK_VERSION:-0.8.0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS=${DEPS_DIR:-$ROOT/.deps}
# Binaries are cached outside the work tree too, so a fresh clone on the same machine
# (e.g. CI) reuses them: ~/.cache/k8s-test-bins/<versions>/
KEY="k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
CACHE=${K8S_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-test-bins}/$KEY
BIN=$DEPS/k8s
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kwok-stages/pod-ready.yaml)

have_all() { local d=$1 f; for f in "${want[@]}"; do [[ -e $d/$f ]] || return 1; done; }
log() { printf '[k8s-deps %s] %s\n' "$(date +%T)" "$*" >&2; }

if have_all "$BIN" && [[ $(cat "$BIN/.key" 2>/dev/null) == "$KEY" ]]; then echo "$BIN"; exit 0; fi
mkdir -p "$DEPS"
if have_all "$CACHE"; then
  log "using cached binaries in $CACHE"
  rm -rf "$BIN"; ln -s "$CACHE" "$BIN"; echo "$BIN"; exit 0
fi

export GOFLAGS=-modcacherw GOTOOLCHAIN=${GOTOOLCHAIN:-local}
SRC=$DEPS/src; rm -rf "$SRC" "$CACHE.tmp"; mkdir -p "$SRC/k8s" "$SRC/etcd" "$CACHE.tmp/kwok-stages"
OUT=$CACHE.tmp
KMINOR=$(echo "$K8S_VERSION" | cut -d. -f2); SV=0.${K8S_VERSION#1.}
LD="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$KMINOR -X $p.gitTreeState=clean"
done

log "k8s.io/kubernetes v$K8S_VERSION: writing tools module"
( cd "$SRC/k8s"
  go mod init k8s-test-tools/k8s >/dev/null 2>&1
  # k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging/...; a consumer
  # must pin every one of them to the matching v0.x tag itself.
  modfile=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  for m in $(sed -n 's|^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*|\1|p' "$modfile"); do
    go mod edit -replace="$m=$m@v$SV"
  done
  go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-scheduler@v$K8S_VERSION" 2>&1 | grep -v '^go: \(downloading\|added\|upgraded\)' >&2 || true
  log "building kube-apiserver kube-controller-manager kube-scheduler (the slow part: ~10-15 min cold on 2 cores)"
  go build -trimpath -ldflags "$LD" -o "$OUT/" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler )

log "etcd v$ETCD_VERSION"
( cd "$SRC/etcd"
  go mod init k8s-test-tools/etcd >/dev/null 2>&1
  # 'go install go.etcd.io/etcd/server/v3@v...' is refused (its go.mod has replace directives),
  # so build it as a dependency of a throw-away module.
  go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" 2>&1 | grep -v '^go: \(downloading\|added\)' >&2 || true
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3 )

log "kwok v$KWOK_VERSION"
GOBIN=$OUT go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
kdir=$(cd "$SRC/etcd" && go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/general/pod-create.yaml pod/general/pod-ready.yaml pod/general/pod-complete.yaml pod/general/pod-delete.yaml; do
  cp "$kdir/kustomize/stage/$f" "$OUT/kwok-stages/"
done
chmod -R u+w "$OUT"
rm -rf "$CACHE"; mv "$OUT" "$CACHE"; echo "$KEY" >"$CACHE/.key"
rm -rf "$BIN"; ln -s "$CACHE" "$BIN"
log "done: $(du -sh "$CACHE" | cut -f1) in $CACHE"
echo "$BIN"
