#!/usr/bin/env bash
# Build Prometheus with Kubernetes service discovery into $RIG_DIR/bin/{prometheus,promtool}-k8s (RIG_DIR:
# <repo>/.rig), from the Go module tests/rig/prometheus pinned to PROMETHEUS_MODULE_VERSION in versions.env.
#   build_prometheus.sh              rebuild when its inputs changed (or the binary is missing)
#   build_prometheus.sh --if-missing the same, but return at once (no go) when it is up to date
# Debian's prometheus package is built without Kubernetes service discovery; the e2e tier needs it to find
# model-server pods the way a user's Prometheus does. Only the file, HTTP and Kubernetes discovery plugins
# are compiled in (Prometheus' remove_all_sd / enable_kubernetes_sd build tags): no cloud SDKs to build.
set -Eeuo pipefail
trap 'echo "prometheus: ERROR: the build failed (build_prometheus.sh line $LINENO); fix and re-run" >&2' ERR
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG_DIR="${RIG_DIR:-$repo/.rig}"
bin="$RIG_DIR/bin"
stamps="$RIG_DIR/stamps"
module="$here/prometheus"
# shellcheck source=/dev/null
source "$here/versions.env"

die() { echo "prometheus: ERROR: $*" >&2; exit 1; }
[[ -n "${PROMETHEUS_MODULE_VERSION:-}" && -n "${PROMETHEUS_VERSION:-}" ]] \
  || die "PROMETHEUS_MODULE_VERSION and PROMETHEUS_VERSION must be set in versions.env"
ldflags="-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
tags="remove_all_sd,enable_kubernetes_sd"

build() {
  grep -qE "^require github.com/prometheus/prometheus $PROMETHEUS_MODULE_VERSION\$" "$module/go.mod" \
    || die "tests/rig/prometheus/go.mod does not require prometheus $PROMETHEUS_MODULE_VERSION (versions.env)"
  local tool
  for tool in prometheus promtool; do  # promtool checks configurations with Kubernetes discovery in them
    (cd "$module" && go build -mod=readonly -trimpath -tags "$tags" -gcflags=all=-dwarf=false -ldflags "$ldflags" \
      -o "$bin/$tool-k8s" "github.com/prometheus/prometheus/cmd/$tool")
  done
  local reported  # captured first: `prometheus --version | grep -q` trips pipefail via SIGPIPE
  reported="$("$bin/prometheus-k8s" --version 2>&1)"
  [[ "$reported" == "prometheus, version ${PROMETHEUS_VERSION#v} "* ]] \
    || die "prometheus-k8s reports '${reported%%$'\n'*}', not ${PROMETHEUS_VERSION#v}"
}

stamp() {  # the stamp hashes the build function too, so changing how it is built rebuilds it
  (echo "$ldflags $tags"; declare -f build; cd "$module" && find . -name '*.go' -o -name 'go.*' | sort | xargs cat) \
    | sha256sum | cut -c1-16
}
fresh() {
  [[ -f "$stamps/prometheus-k8s" && "$(cat "$stamps/prometheus-k8s")" == "$(stamp)" ]] \
    && [[ -x "$bin/prometheus-k8s" && -x "$bin/promtool-k8s" ]]
}

if [[ "${1:-}" == "--if-missing" ]] && fresh; then
  echo "prometheus: up to date in $RIG_DIR (prometheus-k8s $PROMETHEUS_VERSION)"
  exit 0
fi
[[ $# -eq 0 || "$1" == "--if-missing" ]] || die "usage: build_prometheus.sh [--if-missing]"
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || die "the Go toolchain is required (no go on PATH nor in /usr/local/go/bin)"
export GOTOOLCHAIN=local  # the toolchain on the machine, never a download
mkdir -p "$bin" "$stamps"
started=$(date +%s)
echo "prometheus: building prometheus-k8s ${PROMETHEUS_VERSION} ..."
rm -f "$stamps/prometheus-k8s"
build
stamp > "$stamps/prometheus-k8s"
echo "prometheus: ready in $(( $(date +%s) - started ))s: $("$bin/prometheus-k8s" --version 2>&1 | head -1)"
