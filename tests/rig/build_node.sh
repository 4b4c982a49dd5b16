#!/usr/bin/env bash
# Build the rig's REAL node into $RIG_DIR (default: <repo>/.rig): containerd (+ its runc shim and ctr) from
# the Go module tests/rig/containerd, kubelet and kube-proxy from the Kubernetes module tests/rig/go (the
# same pins, flags and version stamp as build.sh, so their shared packages come out of the Go build cache),
# Debian's runc, CNI plugins, iptables and buildah, and two local OCI images into $RIG_DIR/images/: the pod
# sandbox (pause, a static binary from k8s.io/kubernetes' build/pause/linux/pause.c) and a static busybox.
#   build_node.sh              build every piece whose inputs changed (or whose outputs are missing)
#   build_node.sh --if-missing the same, but return at once (no apt, no go) when every piece is up to date
# Every version comes from versions.env. A piece that cannot be built fails the script, loudly: the tests
# never skip around a missing tool.
set -Eeuo pipefail
trap 'echo "rig-node: ERROR: the build failed (build_node.sh line $LINENO); nothing was skipped, fix and re-run" >&2' ERR
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG_DIR="${RIG_DIR:-$repo/.rig}"
bin="$RIG_DIR/bin"
images="$RIG_DIR/images"
stamps="$RIG_DIR/stamps"
# buildah's storage, shared with the other image builds of the rig: everything stays under $RIG_DIR.
storage=(--root "$RIG_DIR/containers/root" --runroot "$RIG_DIR/containers/runroot" --storage-driver overlay)
# shellcheck source=/dev/null
source "$here/versions.env"

CONTAINERD_TOOLS=(containerd containerd-shim-runc-v2 ctr)
KUBE_NODE_TOOLS=(kubelet kube-proxy)
CNI_PLUGINS=(bridge host-local loopback portmap)
CNI_DIR=/usr/lib/cni
IMAGE_ARCHIVES=(pause busybox)

die() { echo "rig-node: ERROR: $*" >&2; exit 1; }
fingerprint() { sha256sum | cut -c1-16; }

# --- what each piece is built from (its stamp) -----------------------------------------------------------
kube_minor="${KUBERNETES_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
kube_ldflags="-s -w"  # build.sh's stamp: `kubelet --version` reports the pinned release
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean"
done
containerd_pkg=github.com/containerd/containerd/v2
containerd_ldflags="-s -w -X $containerd_pkg/version.Version=$CONTAINERD_VERSION"
containerd_ldflags+=" -X $containerd_pkg/version.Revision=$CONTAINERD_VERSION -X $containerd_pkg/version.Package=$containerd_pkg"
# No cgo (static binaries, no C toolchain in the build), and none of the snapshotters that need one.
containerd_tags="no_btrfs no_devmapper no_zfs"

module_files() { (cd "$1" && find . -name '*.go' -o -name 'go.*' | sort | xargs cat); }
debian_stamp() { { echo "$NODE_DEBIAN_PACKAGES ${CNI_PLUGINS[*]}"; declare -f node_debian_packages; } | fingerprint; }
containerd_stamp() {
  { echo "$containerd_ldflags $containerd_tags"; declare -f containerd_binaries; module_files "$here/containerd"; } \
    | fingerprint
}
kube_stamp() { { echo "$kube_ldflags"; declare -f kube_binaries; module_files "$here/go"; } | fingerprint; }
images_stamp() {
  { echo "$PAUSE_IMAGE $BUSYBOX_IMAGE $KUBERNETES_VERSION"; dpkg-query -W -f='${Version}' busybox-static 2>/dev/null
    declare -f node_images pause_image busybox_image; } | fingerprint
}

fresh() {  # fresh PIECE STAMP FILE... — the piece's stamp matches and all its outputs exist
  local piece="$1" value="$2"; shift 2
  [[ -f "$stamps/$piece" && "$(cat "$stamps/$piece")" == "$value" ]] || return 1
  local file; for file in "$@"; do [[ -e "$file" ]] || return 1; done
}
outputs() { local dir="$1" t; shift; for t in "$@"; do echo "$dir/$t"; done; }
debian_outputs() { echo "$bin/runc"; outputs "$CNI_DIR" "${CNI_PLUGINS[@]}"; }
containerd_outputs() { outputs "$bin" "${CONTAINERD_TOOLS[@]}"; }
kube_outputs() { outputs "$bin" "${KUBE_NODE_TOOLS[@]}"; }
images_outputs() { local i; for i in "${IMAGE_ARCHIVES[@]}"; do echo "$images/$i.tar"; done; }

# --- the pieces ----------------------------------------------------------------------------------------------
find_go() {
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "the Go toolchain is required (no go on PATH nor in /usr/local/go/bin)"
  export GOTOOLCHAIN=local  # the toolchain on the machine, never a download
}

node_debian_packages() {
  local missing=() pkg
  for pkg in $NODE_DEBIAN_PACKAGES; do
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "rig-node: installing Debian packages: ${missing[*]}"
    # Other builds may hold dpkg's lock (a parallel rig build): wait for it instead of failing.
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  local path
  path="$(command -v runc || true)"; [[ -n "$path" ]] || path=/usr/sbin/runc
  [[ -x "$path" ]] || die "runc is not installed after installing: $NODE_DEBIAN_PACKAGES"
  ln -sfn "$path" "$bin/runc"
  local plugin
  for plugin in "${CNI_PLUGINS[@]}"; do
    [[ -x "$CNI_DIR/$plugin" ]] || die "the CNI plugin $CNI_DIR/$plugin is missing (Debian: containernetworking-plugins)"
  done
  for pkg in iptables iptables-restore conntrack ip buildah busybox gcc; do
    command -v "$pkg" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "$pkg" >/dev/null \
      || die "$pkg is not on PATH after installing: $NODE_DEBIAN_PACKAGES"
  done
}

containerd_binaries() {
  grep -qE "^require $containerd_pkg $CONTAINERD_VERSION\$|^\s+$containerd_pkg $CONTAINERD_VERSION\$" \
    "$here/containerd/go.mod" \
    || die "tests/rig/containerd/go.mod does not require $containerd_pkg $CONTAINERD_VERSION (versions.env); run: bash tests/rig/containerd/pin.sh"
  local packages=() tool started
  for tool in "${CONTAINERD_TOOLS[@]}"; do packages+=("$containerd_pkg/cmd/$tool"); done
  started=$(date +%s)
  (cd "$here/containerd" && go list -mod=readonly -tags "$containerd_tags" -deps "${packages[@]}" >/dev/null)
  timings+=("$(printf '%-11s %4ds' "  modules" $(( $(date +%s) - started )))")
  started=$(date +%s)
  (cd "$here/containerd" && CGO_ENABLED=0 go build -mod=readonly -trimpath -tags "$containerd_tags" \
    -gcflags=all=-dwarf=false -ldflags "$containerd_ldflags" -o "$bin/" "${packages[@]}")
  timings+=("$(printf '%-11s %4ds' "  compile" $(( $(date +%s) - started )))")
  local reported
  reported="$("$bin/containerd" --version)"
  [[ "$reported" == *" $CONTAINERD_VERSION "* ]] || die "containerd reports '$reported', not $CONTAINERD_VERSION"
  reported="$("$bin/ctr" --version)"
  [[ "$reported" == *" $CONTAINERD_VERSION" ]] || die "ctr reports '$reported', not $CONTAINERD_VERSION"
}

kube_binaries() {
  grep -qE "^\s+k8s.io/kubernetes $KUBERNETES_VERSION\$" "$here/go/go.mod" \
    || die "tests/rig/go/go.mod does not require k8s.io/kubernetes $KUBERNETES_VERSION; run: bash tests/rig/go/pin.sh"
  local packages=() tool started
  for tool in "${KUBE_NODE_TOOLS[@]}"; do packages+=("k8s.io/kubernetes/cmd/$tool"); done
  started=$(date +%s)
  (cd "$here/go" && go list -mod=readonly -deps "${packages[@]}" >/dev/null)
  timings+=("$(printf '%-11s %4ds' "  modules" $(( $(date +%s) - started )))")
  started=$(date +%s)
  # build.sh's flags exactly (-trimpath, no DWARF): what the control plane compiled is reused from the cache.
  (cd "$here/go" && go build -mod=readonly -trimpath -gcflags=all=-dwarf=false -ldflags "$kube_ldflags" \
    -o "$bin/" "${packages[@]}")
  timings+=("$(printf '%-11s %4ds' "  compile" $(( $(date +%s) - started )))")
  local reported
  for tool in "${KUBE_NODE_TOOLS[@]}"; do
    reported="$("$bin/$tool" --version)"
    [[ "$reported" == "Kubernetes $KUBERNETES_VERSION" ]] || die "$tool reports '$reported', not $KUBERNETES_VERSION"
  done
}

image_archive() {  # image_archive CONTAINER IMAGE NAME — commit a working container and write $images/NAME.tar
  local container="$1" image="$2" name="$3"
  buildah "${storage[@]}" commit --quiet --rm --format oci --timestamp 0 "$container" "$image" >/dev/null
  rm -f "$images/$name.tar"
  buildah "${storage[@]}" push --quiet "$image" "oci-archive:$images/$name.tar:$image"
}

pause_image() {
  local source work container
  source="$(cd / && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$source/build/pause/linux/pause.c" ]] || die "no build/pause/linux/pause.c in k8s.io/kubernetes@$KUBERNETES_VERSION"
  work="$(mktemp -d)"
  # Upstream's flags (build/pause/Makefile): small, static, warnings are errors.
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_IMAGE##*:}-rig" -o "$work/pause" "$source/build/pause/linux/pause.c"
  "$work/pause" -v | grep -q "v${PAUSE_IMAGE##*:}-rig" || die "the pause binary does not run"
  container="$(buildah "${storage[@]}" from --quiet scratch)"
  buildah "${storage[@]}" copy --quiet "$container" "$work/pause" /pause >/dev/null
  buildah "${storage[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$container"
  image_archive "$container" "$PAUSE_IMAGE" pause
  rm -rf "$work"
}

busybox_image() {
  local work root container applet
  work="$(mktemp -d)"; root="$work/rootfs"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www"
  install -m 0755 /bin/busybox "$root/bin/busybox"
  # What the smoke tests run: a shell, an HTTP server and client, and the usual file tools.
  for applet in sh ash cat echo env hostname httpd id ip ls mkdir nc printf ps sleep test true false wget; do
    ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/:/bin/sh\nnonroot:x:65532:65532:nonroot:/:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
  printf 'busybox on the rig\n' > "$root/www/index.html"
  chmod 1777 "$root/tmp"
  container="$(buildah "${storage[@]}" from --quiet scratch)"
  buildah "${storage[@]}" copy --quiet "$container" "$root" / >/dev/null
  buildah "${storage[@]}" config --user 65532:65532 --env PATH=/bin --workingdir / \
    --cmd '["httpd", "-f", "-p", "8080", "-h", "/www"]' "$container"
  image_archive "$container" "$BUSYBOX_IMAGE" busybox
  rm -rf "$work"
}

node_images() {
  mkdir -p "$images" "$RIG_DIR/containers"
  pause_image
  busybox_image
}

# --- main --------------------------------------------------------------------------------------------------------
all_fresh() {
  fresh node-debian "$(debian_stamp)" $(debian_outputs) \
    && fresh node-containerd "$(containerd_stamp)" $(containerd_outputs) \
    && fresh node-kube "$(kube_stamp)" $(kube_outputs) \
    && fresh node-images "$(images_stamp)" $(images_outputs)
}
if [[ "${1:-}" == "--if-missing" ]] && all_fresh; then
  echo "rig-node: up to date in $RIG_DIR"
  exit 0
fi
[[ $# -eq 0 || "$1" == "--if-missing" ]] || die "usage: build_node.sh [--if-missing]"

mkdir -p "$bin" "$images" "$stamps"
timings=()
total_started=$(date +%s)
step() {  # step PIECE STAMP FUNCTION OUTPUT... — run FUNCTION unless PIECE is fresh; time it; stamp it
  local piece="$1" value="$2" function="$3"; shift 3
  if fresh "$piece" "$value" "$@"; then
    timings+=("$(printf '%-11s up to date' "${piece#node-}")")
    return
  fi
  local started index=${#timings[@]}; started=$(date +%s)
  timings+=("")  # this piece's line goes before the lines its function adds
  echo "rig-node: building ${piece#node-} ..."
  rm -f "$stamps/$piece"
  "$function"
  local output; for output in "$@"; do [[ -e "$output" ]] || die "$piece did not produce $output"; done
  echo "$value" > "$stamps/$piece"
  timings[index]="$(printf '%-11s %4ds' "${piece#node-}" $(( $(date +%s) - started )))"
}

step node-debian "$(debian_stamp)" node_debian_packages $(debian_outputs)
find_go
step node-containerd "$(containerd_stamp)" containerd_binaries $(containerd_outputs)
step node-kube "$(kube_stamp)" kube_binaries $(kube_outputs)
# The images' stamp names the installed busybox, so it is computed after the Debian packages are in.
step node-images "$(images_stamp)" node_images $(images_outputs)

printf 'rig-node: %s\n' "${timings[@]}"
echo "rig-node: ready in $RIG_DIR ($(( $(date +%s) - total_started ))s): kubelet and kube-proxy $KUBERNETES_VERSION," \
  "containerd $CONTAINERD_VERSION, $(runc --version | head -1), images $PAUSE_IMAGE $BUSYBOX_IMAGE"
