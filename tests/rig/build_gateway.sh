#!/usr/bin/env bash
# Build the test rig's Gateway API implementation, Traefik, into $RIG_DIR/bin/traefik (default RIG_DIR:
# <repo>/.rig), from the Go module tests/rig/traefik pinned to TRAEFIK_VERSION in versions.env.
#   build_gateway.sh              rebuild when its inputs changed (or the binary is missing)
#   build_gateway.sh --if-missing the same, but return at once (no go) when it is up to date
# A separate script and module from build.sh: Traefik's dependency graph (client-go of another minor,
# hundreds of DNS-provider SDKs for ACME) must not perturb the control plane's pins. Fails loudly, never skips.
set -Eeuo pipefail
trap 'echo "gateway: ERROR: the build failed (build_gateway.sh line $LINENO); fix and re-run" >&2' ERR
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG_DIR="${RIG_DIR:-$repo/.rig}"
bin="$RIG_DIR/bin"
stamps="$RIG_DIR/stamps"
module="$here/traefik"
# shellcheck source=/dev/null
source "$here/versions.env"

die() { echo "gateway: ERROR: $*" >&2; exit 1; }
[[ -n "${TRAEFIK_VERSION:-}" ]] || die "TRAEFIK_VERSION is not set in versions.env"

# Traefik reports the version its release builds do: the tag without the leading v.
ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION#v}"

build() {
  grep -qE "^require github.com/traefik/traefik/v3 $TRAEFIK_VERSION\$" "$module/go.mod" \
    || die "tests/rig/traefik/go.mod does not require traefik $TRAEFIK_VERSION (versions.env); run: bash tests/rig/traefik/pin.sh"
  if [[ -L "$bin/traefik" ]]; then rm -f "$bin/traefik"; fi
  local started; started=$(date +%s)
  (cd "$module" && go list -mod=readonly -deps github.com/traefik/traefik/v3/cmd/traefik >/dev/null)
  timings+=("$(printf '%-9s %4ds' "  modules" $(( $(date +%s) - started )))")
  started=$(date +%s)
  # No DWARF from the compiler: the linker strips it anyway (-w), so generating it is pure build time.
  (cd "$module" && go build -mod=readonly -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" \
    -o "$bin/traefik" github.com/traefik/traefik/v3/cmd/traefik)
  timings+=("$(printf '%-9s %4ds' "  compile" $(( $(date +%s) - started )))")
  local reported  # captured first: `traefik version | grep -q` trips pipefail via SIGPIPE
  reported="$("$bin/traefik" version)"
  [[ "$reported" =~ Version:[[:space:]]+${TRAEFIK_VERSION#v}($'\n'|$) ]] \
    || die "traefik reports '$reported', not ${TRAEFIK_VERSION#v}"
}

stamp() {  # the stamp hashes the build function too, so changing how traefik is built rebuilds it
  (echo "$ldflags"; declare -f build; cd "$module" && find . -name '*.go' -o -name 'go.*' | sort | xargs cat) \
    | sha256sum | cut -c1-16
}
fresh() { [[ -f "$stamps/traefik" && "$(cat "$stamps/traefik")" == "$(stamp)" && -x "$bin/traefik" ]]; }

if [[ "${1:-}" == "--if-missing" ]] && fresh; then
  echo "gateway: up to date in $RIG_DIR (traefik $TRAEFIK_VERSION)"
  exit 0
fi
[[ $# -eq 0 || "$1" == "--if-missing" ]] || die "usage: build_gateway.sh [--if-missing]"

command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || die "the Go toolchain is required (no go on PATH nor in /usr/local/go/bin)"
export GOTOOLCHAIN=local  # the toolchain on the machine, never a download
mkdir -p "$bin" "$stamps"
timings=()
started=$(date +%s)
if fresh; then
  timings+=("traefik   up to date")
else
  echo "gateway: building traefik $TRAEFIK_VERSION ($(go version | cut -d' ' -f3)) ..."
  rm -f "$stamps/traefik"
  build
  stamp > "$stamps/traefik"
  timings=("$(printf '%-9s %4ds' traefik $(( $(date +%s) - started )))" "${timings[@]}")
fi
printf 'gateway: %s\n' "${timings[@]}"
echo "gateway: ready in $RIG_DIR/bin ($(( $(date +%s) - started ))s): traefik $("$bin/traefik" version | sed -n 's/^Version:[[:space:]]*//p')"
