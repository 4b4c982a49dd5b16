#!/usr/bin/env bash
# Build the real node's cluster DNS, CoreDNS, into $RIG_DIR/bin/coredns (default RIG_DIR: <repo>/.rig), from
# the Go module tests/rig/coredns pinned to COREDNS_VERSION in versions.env.
#   build_dns.sh              rebuild when its inputs changed (or the binary is missing)
#   build_dns.sh --if-missing the same, but return at once (no go) when it is up to date
# A module of its own: CoreDNS' client-go must not move the control plane's pins. Its main.go imports only the
# plugins the rig uses (the kubernetes plugin, bind, cache, health, ready, errors, log), not CoreDNS' whole
# plugin.cfg with its cloud DNS SDKs. Fails loudly, never skips.
set -Eeuo pipefail
trap 'echo "dns: ERROR: the build failed (build_dns.sh line $LINENO); fix and re-run" >&2' ERR
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG_DIR="${RIG_DIR:-$repo/.rig}"
bin="$RIG_DIR/bin"
stamps="$RIG_DIR/stamps"
module="$here/coredns"
# shellcheck source=/dev/null
source "$here/versions.env"

die() { echo "dns: ERROR: $*" >&2; exit 1; }
[[ -n "${COREDNS_VERSION:-}" ]] || die "COREDNS_VERSION is not set in versions.env"

# CoreDNS' version is a constant of its coremain package; the commit line of `coredns -version` names the module.
ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=module-$COREDNS_VERSION"
PLUGINS=(bind cache errors health kubernetes log ready)

build() {
  grep -qE "^require github.com/coredns/coredns $COREDNS_VERSION\$" "$module/go.mod" \
    || die "tests/rig/coredns/go.mod does not require coredns $COREDNS_VERSION (versions.env); run: bash tests/rig/coredns/pin.sh"
  if [[ -L "$bin/coredns" ]]; then rm -f "$bin/coredns"; fi
  local started; started=$(date +%s)
  (cd "$module" && go list -mod=readonly -deps . >/dev/null)  # downloads just what it needs
  timings+=("$(printf '%-9s %4ds' "  modules" $(( $(date +%s) - started )))")
  started=$(date +%s)
  # No DWARF from the compiler: the linker strips it anyway (-w), so generating it is pure build time.
  (cd "$module" && go build -mod=readonly -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" \
    -o "$bin/coredns" .)
  timings+=("$(printf '%-9s %4ds' "  compile" $(( $(date +%s) - started )))")
  local reported plugin  # captured first: `coredns -version | grep -q` trips pipefail via SIGPIPE
  reported="$("$bin/coredns" -version)"
  [[ "$reported" == "CoreDNS-${COREDNS_VERSION#v}"$'\n'* ]] \
    || die "coredns reports '${reported%%$'\n'*}', not ${COREDNS_VERSION#v}"
  reported="$("$bin/coredns" -plugins)"
  for plugin in "${PLUGINS[@]}"; do
    grep -qx "$plugin" <<<"$reported" || die "coredns was built without the $plugin plugin: $reported"
  done
}

stamp() {  # the stamp hashes the build function too, so changing how coredns is built rebuilds it
  (echo "$ldflags ${PLUGINS[*]}"; declare -f build; cd "$module" && find . -name '*.go' -o -name 'go.*' | sort | xargs cat) \
    | sha256sum | cut -c1-16
}
fresh() { [[ -f "$stamps/coredns" && "$(cat "$stamps/coredns")" == "$(stamp)" && -x "$bin/coredns" ]]; }

if [[ "${1:-}" == "--if-missing" ]] && fresh; then
  echo "dns: up to date in $RIG_DIR (coredns $COREDNS_VERSION)"
  exit 0
fi
[[ $# -eq 0 || "$1" == "--if-missing" ]] || die "usage: build_dns.sh [--if-missing]"

command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || die "the Go toolchain is required (no go on PATH nor in /usr/local/go/bin)"
export GOTOOLCHAIN=local  # the toolchain on the machine, never a download
mkdir -p "$bin" "$stamps"
timings=()
started=$(date +%s)
if fresh; then
  timings+=("coredns   up to date")
else
  echo "dns: building coredns $COREDNS_VERSION ($(go version | cut -d' ' -f3)) ..."
  rm -f "$stamps/coredns"
  build
  stamp > "$stamps/coredns"
  timings=("$(printf '%-9s %4ds' coredns $(( $(date +%s) - started )))" "${timings[@]}")
fi
printf 'dns: %s\n' "${timings[@]}"
version="$("$bin/coredns" -version)"  # not `| head -1`: the early close trips pipefail via SIGPIPE
echo "dns: ready in $RIG_DIR/bin ($(( $(date +%s) - started ))s): ${version%%$'\n'*}"
