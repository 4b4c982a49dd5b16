#!/usr/bin/env bash
# Build the test rig into $RIG_DIR (default: <repo>/.rig): a real Kubernetes control plane, etcd, kwok and
# helm compiled from their Go modules in one `go build` (module tests/rig/go), Prometheus from Debian, and
# manifests copied out of Go modules: third-party CRDs (Gateway API, Prometheus Operator, Istio) and kwok's
# stages. Then the real node (build_node.sh: containerd, kubelet, kube-proxy, CNI, pause image), the gateway
# (build_gateway.sh: Traefik), Prometheus with Kubernetes discovery (build_prometheus.sh) and the node's
# cluster DNS (build_dns.sh: CoreDNS). The container images of the project are built by build_images.sh
# (`make images`), which needs the project's sources.
#   build.sh              build every piece whose inputs changed (or whose outputs are missing)
#   build.sh --if-missing the same, but return at once (no apt, no go) when every piece is up to date
# Every version comes from versions.env. A piece that cannot be built fails the script, loudly: the tests
# never skip around a missing tool.
set -Eeuo pipefail
trap 'echo "rig: ERROR: the build failed (build.sh line $LINENO); nothing was skipped, fix and re-run" >&2' ERR
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG_DIR="${RIG_DIR:-$repo/.rig}"
bin="$RIG_DIR/bin"
crds="$RIG_DIR/crds"
stamps="$RIG_DIR/stamps"
# shellcheck source=/dev/null
source "$here/versions.env"

GO_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok helm)
DEBIAN_TOOLS=(prometheus promtool)
CRD_SETS=(gateway-api prometheus-operator istio)
KWOK_STAGES=(node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease
  pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete)

die() { echo "rig: ERROR: $*" >&2; exit 1; }
fingerprint() { sha256sum | cut -c1-16; }

# --- what each piece is built from (its stamp) -----------------------------------------------------------
kube_minor="${KUBERNETES_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do  # helm's default KubeVersion
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
done
ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}"

go_stamp() {  # the stamps hash the build functions too, so changing how a piece is built rebuilds it
  (echo "$ldflags"; declare -f go_binaries; cd "$here/go" && find . -name '*.go' -o -name 'go.*' | sort | xargs cat) \
    | fingerprint
}
manifests_stamp() {
  { echo "$GATEWAY_API_VERSION $PROMETHEUS_OPERATOR_VERSION $ISTIO_API_VERSION $KWOK_VERSION ${KWOK_STAGES[*]}"
    declare -f manifests; } | fingerprint
}
debian_stamp() { echo "$DEBIAN_PACKAGES" | fingerprint; }

fresh() {  # fresh PIECE STAMP FILE... — the piece's stamp matches and all its outputs exist
  local piece="$1" value="$2"; shift 2
  [[ -f "$stamps/$piece" && "$(cat "$stamps/$piece")" == "$value" ]] || return 1
  local file; for file in "$@"; do [[ -e "$file" ]] || return 1; done
}
go_outputs() { local t; for t in "${GO_TOOLS[@]}"; do echo "$bin/$t"; done; }
debian_outputs() { local t; for t in "${DEBIAN_TOOLS[@]}"; do echo "$bin/$t"; done; }
manifests_outputs() {
  local s; for s in "${CRD_SETS[@]}"; do echo "$crds/$s"; done
  for s in "${KWOK_STAGES[@]}"; do echo "$RIG_DIR/kwok/stages/${s##*/}.yaml"; done
}

# --- the pieces ----------------------------------------------------------------------------------------------
find_go() {
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "the Go toolchain is required (no go on PATH nor in /usr/local/go/bin)"
  export GOTOOLCHAIN=local  # the toolchain on the machine, never a download
}

debian_packages() {
  local missing=() pkg
  for pkg in $DEBIAN_PACKAGES; do
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "rig: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  local tool path
  for tool in "${DEBIAN_TOOLS[@]}"; do
    path="$(command -v "$tool")" || die "$tool is not on PATH after installing $DEBIAN_PACKAGES"
    ln -sfn "$path" "$bin/$tool"
  done
}

go_binaries() {
  # The pins in go.mod must be the ones in versions.env (pin.sh writes both in step).
  local module version
  for module in "k8s.io/kubernetes $KUBERNETES_VERSION" "go.etcd.io/etcd/server/v3 $ETCD_VERSION" \
    "sigs.k8s.io/kwok $KWOK_VERSION" "helm.sh/helm/v3 $HELM_VERSION"; do
    grep -qE "^\s+$module\$" "$here/go/go.mod" \
      || die "tests/rig/go/go.mod does not require $module (versions.env); run: bash tests/rig/go/pin.sh"
  done
  version="v0.${KUBERNETES_VERSION#v1.}"
  if grep -E '^\s+k8s.io/[a-z0-9-]+ => ' "$here/go/go.mod" | grep -vq " $version\$"; then
    die "a k8s.io staging module in tests/rig/go/go.mod is not replaced by $version; run: bash tests/rig/go/pin.sh"
  fi
  local tool
  for tool in "${GO_TOOLS[@]}"; do  # never write through a link left by an older layout (e.g. Debian's etcd)
    if [[ -L "$bin/$tool" ]]; then rm -f "$bin/$tool"; fi
  done
  local packages=(
    k8s.io/kubernetes/cmd/kube-apiserver
    k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kube-scheduler
    modelrollout.io/rig/cmd/etcd
    sigs.k8s.io/kwok/cmd/kwok
    helm.sh/helm/v3/cmd/helm
  )
  local started; started=$(date +%s)
  (cd "$here/go" && go list -mod=readonly -deps "${packages[@]}" >/dev/null)  # downloads just what they need
  timings+=("$(printf '%-9s %4ds' "  modules" $(( $(date +%s) - started )))")
  started=$(date +%s)
  # One invocation for all six: what they share (client-go, apimachinery, api, gRPC, ...) compiles once.
  # No DWARF from the compiler: the linker strips it anyway (-w), so generating it is pure build time.
  (cd "$here/go" && go build -mod=readonly -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" \
    -o "$bin/" "${packages[@]}")
  timings+=("$(printf '%-9s %4ds' "  compile" $(( $(date +%s) - started )))")
  # Each binary must report the pinned version (captured first: `tool | grep -q` trips pipefail via SIGPIPE).
  local reported
  reported="$("$bin/kube-apiserver" --version)"
  [[ "$reported" == "Kubernetes $KUBERNETES_VERSION" ]] || die "kube-apiserver reports '$reported', not $KUBERNETES_VERSION"
  reported="$("$bin/etcd" --version)"
  [[ "$reported" == *"etcd Version: ${ETCD_VERSION#v}"* ]] || die "etcd reports '$reported', not $ETCD_VERSION"
  reported="$("$bin/helm" version --template '{{.Version}}')"
  [[ "$reported" == "$HELM_VERSION" ]] || die "helm reports '$reported', not $HELM_VERSION"
  reported="$("$bin/kwok" --version)"
  [[ "$reported" == *"kwok version $KWOK_VERSION "* ]] || die "kwok reports '$reported', not $KWOK_VERSION"
}

module_dir() {  # the unpacked source of a Go module in the module cache (downloaded when missing)
  local json dir
  json="$(cd / && go mod download -json "$1" 2>&1)" || die "could not download Go module $1: $json"
  dir="$(sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p' <<<"$json")"
  [[ -n "$dir" && -d "$dir" ]] || die "Go module $1 has no source directory: $json"
  echo "$dir"
}

manifests() {
  local gateway prom istio kwok name stage
  gateway="$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")"
  prom="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
  istio="$(module_dir "istio.io/api@$ISTIO_API_VERSION")"
  kwok="$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")"
  rm -rf "$crds" && mkdir -p "$crds/gateway-api" "$crds/prometheus-operator" "$crds/istio"
  # Gateway API standard channel: its CRDs and the ValidatingAdmissionPolicy guarding upgrades.
  install -m 0644 "$gateway"/config/crd/standard/*.yaml "$crds/gateway-api/"
  for name in servicemonitors podmonitors prometheusrules; do
    install -m 0644 "$prom/example/prometheus-operator-crd/monitoring.coreos.com_$name.yaml" \
      "$crds/prometheus-operator/"
  done
  # Istio ships all its CRDs in one multi-document file; keep the two traffic splitting needs.
  for name in virtualservices destinationrules; do
    awk -v want="  name: $name.networking.istio.io" '
      function flush() { if (index(doc, "\n" want "\n")) printf "%s", doc; doc = "" }
      /^---$/ { flush(); next }
      { doc = doc $0 "\n" }
      END { flush() }' "$istio/kubernetes/customresourcedefinitions.gen.yaml" > "$crds/istio/$name.networking.istio.io.yaml"
    grep -q "^kind: CustomResourceDefinition" "$crds/istio/$name.networking.istio.io.yaml" \
      || die "no $name CRD in istio.io/api@$ISTIO_API_VERSION"
  done
  # kwok >= 0.8 has no built-in stages: use upstream's "fast" set (node ready + lease heartbeat, pods ready).
  rm -rf "$RIG_DIR/kwok" && mkdir -p "$RIG_DIR/kwok/stages"
  for stage in "${KWOK_STAGES[@]}"; do
    install -m 0644 "$kwok/kustomize/stage/$stage.yaml" "$RIG_DIR/kwok/stages/"
  done
}

# --- main --------------------------------------------------------------------------------------------------------
all_fresh() {
  fresh debian "$(debian_stamp)" $(debian_outputs) \
    && fresh go "$(go_stamp)" $(go_outputs) \
    && fresh manifests "$(manifests_stamp)" $(manifests_outputs)
}
[[ $# -eq 0 || "$1" == "--if-missing" ]] || die "usage: build.sh [--if-missing]"
# The other tiers have scripts of their own (their Go modules must not move the control plane's pins);
# this one runs them all, with the same flag, after its own pieces.
build_parts() {
  local part
  for part in node gateway prometheus dns; do
    bash "$here/build_$part.sh" "$@"
  done
}
if [[ "${1:-}" == "--if-missing" ]] && all_fresh; then
  echo "rig: control plane up to date in $RIG_DIR"
  build_parts "$@"
  exit 0
fi

mkdir -p "$bin" "$crds" "$stamps"
timings=()
total_started=$(date +%s)
step() {  # step PIECE STAMP FUNCTION OUTPUT... — run FUNCTION unless PIECE is fresh; time it; stamp it
  local piece="$1" value="$2" function="$3"; shift 3
  if fresh "$piece" "$value" "$@"; then
    timings+=("$(printf '%-9s up to date' "$piece")")
    return
  fi
  local started index=${#timings[@]}; started=$(date +%s)
  timings+=("")  # this piece's line goes before the lines its function adds
  echo "rig: building $piece ..."
  rm -f "$stamps/$piece"
  "$function"
  local output; for output in "$@"; do [[ -e "$output" ]] || die "$piece did not produce $output"; done
  echo "$value" > "$stamps/$piece"
  timings[index]="$(printf '%-9s %4ds' "$piece" $(( $(date +%s) - started )))"
}

step debian "$(debian_stamp)" debian_packages $(debian_outputs)
find_go
echo "rig: $(go version); GOCACHE=$(go env GOCACHE) GOMODCACHE=$(go env GOMODCACHE)"
step go "$(go_stamp)" go_binaries $(go_outputs)
step manifests "$(manifests_stamp)" manifests $(manifests_outputs)

build_parts "$@"
printf 'rig: %s\n' "${timings[@]}"
echo "rig: ready in $RIG_DIR ($(( $(date +%s) - total_started ))s): Kubernetes $KUBERNETES_VERSION, kwok $KWOK_VERSION," \
  "etcd $ETCD_VERSION, helm $HELM_VERSION, $("$bin/prometheus" --version 2>&1 | head -1 | cut -d' ' -f1-3)"
