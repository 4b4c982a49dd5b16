#!/usr/bin/env bash
# Build the project's container images on this machine, with no registry and no Docker engine: a Debian base
# made by debootstrap from the machine's apt mirror, then Dockerfile.server and Dockerfile.operator exactly as
# users build them (only --build-arg PYTHON_IMAGE points at that base), by buildah; and the chart's `helm test`
# image (sh, wget, grep from Debian packages, FROM scratch). Each image is exported as an OCI archive that
# `ctr -n k8s.io images import` loads under its reference and under REPOSITORY@DIGEST.
#   build_images.sh              build every image whose inputs changed (or whose outputs are missing)
#   build_images.sh --if-missing the same, but return at once (no apt, no build) when everything is up to date
# Outputs in $RIG_DIR/images: model-server.tar, operator.tar, helm-test.tar, images.env (references, digests,
# archives), and the build logs in logs/. Image storage: $RIG_DIR/containers, shared with the node rig's
# images: never wiped, and only layers this script made are ever removed from it.
set -Eeuo pipefail
trap 'echo "images: ERROR: the build failed (build_images.sh line $LINENO); fix and re-run" >&2' ERR
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG_DIR="${RIG_DIR:-$repo/.rig}"
images="$RIG_DIR/images"
logs="$images/logs"
stamps="$RIG_DIR/stamps"
storage="$RIG_DIR/containers"
# shellcheck source=/dev/null
source "$here/versions.env"

BASE_IMAGE="localhost/modelrollout/python-base:$IMAGE_DEBIAN_SUITE"
# name, Dockerfile, reference. Both Dockerfiles COPY the same sources (APP_SOURCES, filtered by .dockerignore).
APPS=("model-server Dockerfile.server localhost/modelrollout/model-server:e2e"
  "operator Dockerfile.operator localhost/modelrollout/operator:e2e")
APP_SOURCES=(pyproject.toml README.md model_server model_operator modelrollout)
# name, reference of the `helm test` pod's image (made of TEST_IMAGE_PACKAGES).
TEST_IMAGE=(helm-test localhost/modelrollout/helm-test:e2e)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt  # Debian's trust store, on the host and in the base

die() { echo "images: ERROR: $*" >&2; exit 1; }
fingerprint() { sha256sum | cut -c1-16; }
bah() { buildah --root "$storage/root" --runroot "$storage/runroot" --storage-driver overlay "$@"; }
since() { echo $(( $(date +%s) - $1 )); }

# --- the machine's apt mirror, CA trust and pip settings (read here, never written into this repository) --------
apt_source() {  # "URI KEYRING" of the first deb822 stanza that serves $IMAGE_DEBIAN_SUITE
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$file" ]] || continue
    awk -v suite="$IMAGE_DEBIAN_SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri, key; exit }
        types = suites = uri = key = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^Types:/ { types = $0; sub(/^Types:[ \t]*/, "", types) }
      /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
      /^URIs:/ { uri = $2 }
      /^Signed-By:/ { key = $2 }
      END { flush() }' "$file"
  done | head -1
  if [[ -f /etc/apt/sources.list ]]; then  # one-line format, as a fallback
    awk -v suite="$IMAGE_DEBIAN_SUITE" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2, ""; exit }' \
      /etc/apt/sources.list
  fi
}

host_ca_bundle() {  # the trust store pip uses on this machine
  local cert
  cert="$(python3 -m pip config get global.cert 2>/dev/null || true)"
  cert="${PIP_CERT:-${cert:-${SSL_CERT_FILE:-$CA_BUNDLE}}}"
  [[ -f "$cert" ]] || die "the CA bundle $cert (pip's cert setting) does not exist"
  echo "$cert"
}

pip_conf() {
  # The host's pip settings (its files and PIP_* variables, as `pip config list` reports them), mounted read-only
  # at /etc/pip.conf for the Dockerfiles' RUN steps only: pip in the build reaches the index exactly as pip here
  # does, and no image keeps them (they may hold an index's credentials). The CA setting names the base's trust
  # store (a copy of the host's); a local find-links directory does not exist in the build, so it is left out.
  local line key value
  echo "[global]"
  echo "cert = $CA_BUNDLE"
  python3 -m pip config list 2>/dev/null | while IFS= read -r line; do
    key="${line%%=*}"; key="${key#*.}"; value="${line#*=}"; value="${value#\'}"; value="${value%\'}"
    case "$key" in
      cert) ;;
      find-links | no-index) [[ "$value" != *://* ]] || echo "$key = $value" ;;
      *) echo "$key = $value" ;;
    esac
  done | sort -u -t= -k1,1
}

# --- stamps ------------------------------------------------------------------------------------------------------------
image_id() { bah images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null | head -1; }
base_stamp() {  # what the base is made of, and how (the functions: changing them rebuilds it)
  { echo "$IMAGE_DEBIAN_SUITE $IMAGE_DEBIAN_PACKAGES $(apt_source)"; sha256sum < "$(host_ca_bundle)"
    declare -f base_image; } | fingerprint
}
app_stamp() {  # app_stamp DOCKERFILE — what the Dockerfile COPYs, the Dockerfile, .dockerignore, the base, how
  { cd "$repo"
    find "${APP_SOURCES[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
    cat "$1" .dockerignore; image_id "$BASE_IMAGE"; declare -f app_image export_image; } | fingerprint
}
test_image_stamp() {  # the packages, the mirror, how
  { echo "$IMAGE_DEBIAN_SUITE $TEST_IMAGE_PACKAGES $(apt_source)"; declare -f test_image export_image; } | fingerprint
}
fresh() {  # fresh PIECE STAMP IMAGE [FILE] — the stamp matches, the image is in storage, the file exists
  [[ -f "$stamps/$1" && "$(cat "$stamps/$1")" == "$2" && -n "$(image_id "$3")" ]] && [[ -z "${4:-}" || -f "$4" ]]
}

# --- tools -------------------------------------------------------------------------------------------------------------
tools() {
  local missing=() pkg
  for pkg in $IMAGE_TOOL_PACKAGES; do
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "images: installing Debian packages: ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  mkdir -p "$storage/root" "$storage/runroot" "$images" "$logs" "$stamps"
}

# --- the pieces ----------------------------------------------------------------------------------------------------------
# Each piece adds "phase Ns" entries to `phases`; step() prints them on the piece's line.
base_image() {
  # debootstrap (minbase + Python) straight into a scratch container's root; the host's CA trust; the suite's
  # security and point-release updates from the same mirror; then away with what a container never needs.
  local source uri keyring container=modelrollout-python-base-build root started
  source="$(apt_source)"; uri="${source%% *}"; keyring="${source#* }"
  [[ -n "$uri" ]] || die "no apt source for $IMAGE_DEBIAN_SUITE in /etc/apt/sources.list.d or /etc/apt/sources.list"
  bah rm "$container" >/dev/null 2>&1 || true  # left by an interrupted build
  bah from --name "$container" scratch >/dev/null
  root="$(bah mount "$container")"
  [[ -d "$root" && "$root" != / ]] || die "buildah mounted the base's container at '$root'"
  started=$(date +%s)
  debootstrap --variant=minbase --components=main ${keyring:+--keyring="$keyring"} \
    --include="${IMAGE_DEBIAN_PACKAGES// /,}" "$IMAGE_DEBIAN_SUITE" "$root" "$uri" > "$logs/debootstrap.log" 2>&1 \
    || { tail -20 "$logs/debootstrap.log" >&2; die "debootstrap failed (log: $logs/debootstrap.log)"; }
  phases+=("debootstrap $(since "$started")s")
  started=$(date +%s)
  rm -f "$root/etc/apt/sources.list"
  local file key
  for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [[ -f "$file" ]] && install -m 0644 "$file" "$root$file"
  done
  sed -n 's/^Signed-By:[ \t]*//p' "$root"/etc/apt/sources.list.d/*.sources 2>/dev/null | while read -r key; do
    [[ -f "$root$key" ]] || install -D -m 0644 "$key" "$root$key"
  done
  install -m 0644 /etc/resolv.conf "$root/etc/resolv.conf"
  { chroot "$root" apt-get -o Acquire::Retries=3 update -qq \
      && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get -o Dpkg::Use-Pty=0 upgrade -y -qq \
      --no-install-recommends; } > "$logs/base-updates.log" 2>&1 \
    || { tail -20 "$logs/base-updates.log" >&2; die "updating the base failed (log: $logs/base-updates.log)"; }
  phases+=("updates $(since "$started")s")
  # The host's trust store (after the updates: a new ca-certificates regenerates Debian's own): pip in the build
  # and the model server's https:// bundle downloads trust what this machine trusts.
  install -m 0644 "$(host_ca_bundle)" "$root$CA_BUNDLE"
  chroot "$root" apt-get clean
  # Debian's compiled stdlib (__pycache__) stays: on a read-only root it could never be written later.
  rm -rf "${root:?}"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/dpkg/*-old \
    "$root"/etc/resolv.conf "$root"/etc/hostname "${root:?}"/dev/* "$root"/tmp/* "$root"/root/.cache
  find "$root/usr/share/doc" ! -type d ! -name copyright -delete  # the licences stay
  : > "$root/etc/machine-id"
  chroot "$root" python -c 'import ensurepip, ssl, venv' || die "the base's python lacks venv, ensurepip or ssl"
  bah umount "$container" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --os linux --arch "$(dpkg --print-architecture)" \
    --created-by "debootstrap --variant=minbase $IMAGE_DEBIAN_SUITE + ${IMAGE_DEBIAN_PACKAGES// /,} + updates" \
    "$container"
  bah commit --quiet --rm "$container" "$BASE_IMAGE" >/dev/null
}

app_image() {  # app_image NAME DOCKERFILE REFERENCE
  local name="$1" dockerfile="$2" reference="$3" started
  started=$(date +%s)
  # --force-rm: a failed RUN leaves no working container behind in the shared storage.
  (cd "$repo" && bah bud --layers --force-rm --pull=never --isolation chroot --format oci \
    --volume "$pip_conf_file:/etc/pip.conf:ro" \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" -f "$dockerfile" -t "$reference" .) > "$logs/build-$name.log" 2>&1 \
    || { tail -40 "$logs/build-$name.log" >&2; die "buildah bud -f $dockerfile failed (log: $logs/build-$name.log)"; }
  phases+=("bud $(since "$started")s")
  export_image "$name" "$reference"
}

export_image() {  # export_image NAME REFERENCE — an OCI archive containerd imports as REFERENCE and REPO@DIGEST
  local name="$1" reference="$2" started layout
  started=$(date +%s)
  layout="$(mktemp -d "$images/.$name.XXXXXX")"
  bah push --quiet "$reference" "oci:$layout:$reference" >/dev/null
  # containerd names an imported manifest after its io.containerd.image.name annotation (else the OCI ref.name,
  # which plain `ctr images import` keeps only when it is a full reference): one entry per name.
  python3 - "$layout/index.json" "$reference" <<'PY'
import json, sys
path, reference = sys.argv[1], sys.argv[2]
with open(path) as file:
    index = json.load(file)
(manifest,) = index["manifests"]
pinned = f"{reference.rsplit(':', 1)[0]}@{manifest['digest']}"
index["manifests"] = [
    {**manifest, "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": reference}},
    {**manifest, "annotations": {"io.containerd.image.name": pinned}},
]
with open(path, "w") as file:
    json.dump(index, file)
PY
  tar -C "$layout" -cf "$images/$name.tar.tmp" oci-layout index.json blobs
  mv "$images/$name.tar.tmp" "$images/$name.tar"
  rm -rf "$layout"
  phases+=("export $(since "$started")s")
}

test_image() {  # test_image NAME REFERENCE
  # TEST_IMAGE_PACKAGES and every package they depend on, as apt resolves them for an empty system, unpacked
  # (dpkg-deb -x: no maintainer scripts, nothing of theirs matters here) into a scratch container's root. apt runs
  # on a private state (package lists fetched from the machine's sources, an empty dpkg status, its own cache) and
  # never touches the host's.
  local name="$1" reference="$2" work root container="modelrollout-$1-build" started deb
  started=$(date +%s)
  [[ -n "$(apt_source)" ]] || die "no apt source for $IMAGE_DEBIAN_SUITE in /etc/apt/sources.list.d or /etc/apt/sources.list"
  rm -rf "$images/.$name".*  # left by an interrupted build
  bah rm "$container" >/dev/null 2>&1 || true
  work="$(mktemp -d "$images/.$name.XXXXXX")"; root="$work/root"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$root"
  : > "$work/status"
  local apt=(apt-get -q -o Dir::State::Lists="$work/lists" -o Dir::State::status="$work/status"
    -o Dir::Cache="$work/cache" -o APT::Sandbox::User=root -o Acquire::Retries=3)
  # shellcheck disable=SC2086  # the package list is words
  { "${apt[@]}" update && "${apt[@]}" install --download-only -y --no-install-recommends $TEST_IMAGE_PACKAGES; } \
    > "$logs/build-$name.log" 2>&1 \
    || { tail -20 "$logs/build-$name.log" >&2; die "apt could not fetch $TEST_IMAGE_PACKAGES (log: $logs/build-$name.log)"; }
  for deb in "$work"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
  ls "$work"/cache/archives/*.deb | sed 's#.*/##' >> "$logs/build-$name.log"
  phases+=("packages $(since "$started")s")
  rm -rf "${root:?}"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale "$root"/usr/share/lintian
  find "$root/usr/share/doc" ! -type d ! -name copyright -delete  # the licences stay
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
  install -d -m 1777 "$root/tmp"
  # One attempt, as busybox's wget makes: GNU wget retries a timed-out connection 20 times with back-off, so a
  # hook pointed at a wrong port would hang for minutes instead of failing after its `-T 5`.
  printf '# the rig: one attempt per URL, like busybox wget\ntries = 1\n' >> "$root/etc/wgetrc"
  # What the hook runs, as its user: a shell, the pipe, wget's options (the timeout busybox lacks), grep.
  chroot --userspec=65532:65532 "$root" /bin/sh -c 'wget -q -T 5 --version | grep -q "^GNU Wget"' \
    || die "sh, wget -T and grep do not run in the $name image"
  bah from --quiet --name "$container" scratch >/dev/null
  bah copy --quiet "$container" "$root" / >/dev/null
  bah config --user 65532:65532 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --workingdir / --cmd '["sh"]' --os linux --arch "$(dpkg --print-architecture)" \
    --created-by "Debian $IMAGE_DEBIAN_SUITE: ${TEST_IMAGE_PACKAGES// /, } and their dependencies" "$container"
  local previous; previous="$(image_id "$reference")"
  bah commit --quiet --rm --format oci --timestamp 0 "$container" "$reference" >/dev/null
  # The image this one replaces (untagged now) goes: nothing else builds on it.
  if [[ -n "$previous" && "$previous" != "$(image_id "$reference")" ]]; then
    bah rmi "$previous" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  export_image "$name" "$reference"
}

oci_digest() { tar -xOf "$1" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])'; }

write_env() {
  local line name dockerfile reference var
  {
    echo "# Written by tests/rig/build_images.sh. Each image: its reference, the manifest digest containerd stores"
    echo "# after \`ctr -n k8s.io images import ARCHIVE\` (which names it REFERENCE and REPOSITORY@DIGEST), the archive."
    echo "BASE_IMAGE=$BASE_IMAGE"
    echo "BASE_IMAGE_ID=$(image_id "$BASE_IMAGE")"
    for line in "${APPS[@]}" "${TEST_IMAGE[0]} - ${TEST_IMAGE[1]}"; do
      read -r name dockerfile reference <<<"$line"
      var="$(tr 'a-z-' 'A-Z_' <<<"$name")"
      echo "${var}_IMAGE=$reference"
      echo "${var}_DIGEST=$(oci_digest "$images/$name.tar")"
      echo "${var}_ARCHIVE=$images/$name.tar"
    done
  } > "$images/images.env.tmp"
  mv "$images/images.env.tmp" "$images/images.env"
}

forget_old_layers() {
  # --layers keeps every step's image as the cache of the next build; a source change orphans the old ones
  # (hundreds of MB each time). Remove those this script made before (listed in the stamp dir) that the latest
  # builds do not use; one still in use stays listed for the next run. Nothing else in the shared storage is touched.
  local list="$stamps/image-layer-cache" keep
  keep="$( { image_id "$BASE_IMAGE"; sed -n 's/^--> \([0-9a-f]\{11,\}\)$/\1/p' "$logs"/build-*.log; } \
    | sed 's/^sha256://' | cut -c1-11 | sort -u)"
  touch "$list"
  {
    tac "$list" | while read -r id; do  # newest first: children before their parents
      [[ -z "$id" ]] || grep -qx "$id" <<<"$keep" && continue
      out="$(bah rmi "$id" 2>&1)" || [[ "$out" == *"not known"* ]] || echo "$id"
    done | tac
    echo "$keep"
  } | awk 'NF && !seen[$0]++' > "$list.tmp"
  mv "$list.tmp" "$list"
}

# --- main ------------------------------------------------------------------------------------------------------------------
all_fresh() {
  fresh python-base "$(base_stamp)" "$BASE_IMAGE" || return 1
  local line name dockerfile reference
  for line in "${APPS[@]}"; do
    read -r name dockerfile reference <<<"$line"
    fresh "image-$name" "$(app_stamp "$dockerfile")" "$reference" "$images/$name.tar" || return 1
  done
  fresh "image-${TEST_IMAGE[0]}" "$(test_image_stamp)" "${TEST_IMAGE[1]}" "$images/${TEST_IMAGE[0]}.tar" || return 1
  [[ -f "$images/images.env" ]]
}
[[ $# -eq 0 || "$1" == "--if-missing" ]] || die "usage: build_images.sh [--if-missing]"
[[ $(id -u) -eq 0 ]] || die "buildah with overlay storage and chroot isolation needs root"
mkdir -p "$stamps"
exec 9>"$stamps/images.lock"
flock 9  # one build at a time: a second caller waits, then finds the images fresh
if [[ "${1:-}" == "--if-missing" ]] && command -v buildah >/dev/null && all_fresh; then
  echo "images: up to date in $images"
  exit 0
fi

total_started=$(date +%s)
started=$(date +%s)
tools
echo "images: $(printf '%-20s %4ds' tools "$(since "$started")")"
step() {  # step PIECE STAMP IMAGE FILE FUNCTION ARG... — run FUNCTION unless PIECE is fresh; report its phases
  local piece="$1" value="$2" image="$3" file="$4" function="$5" started phases=(); shift 5
  if fresh "$piece" "$value" "$image" "$file"; then
    echo "images: $(printf '%-20s up to date' "$piece")"
    return
  fi
  started=$(date +%s)
  rm -f "$stamps/$piece"
  "$function" "$@"
  echo "$value" > "$stamps/$piece"
  local joined; joined="$(printf '%s, ' "${phases[@]}")"
  echo "images: $(printf '%-20s %4ds' "$piece" "$(since "$started")") (${joined%, })"
}

step python-base "$(base_stamp)" "$BASE_IMAGE" "" base_image
pip_conf_file="$logs/pip.conf"
(umask 077 && pip_conf > "$pip_conf_file")
# The images build side by side: one's downloads overlap the other's compiling and committing.
pids=()
step "image-${TEST_IMAGE[0]}" "$(test_image_stamp)" "${TEST_IMAGE[1]}" "$images/${TEST_IMAGE[0]}.tar" \
  test_image "${TEST_IMAGE[@]}" &
pids+=($!)
for line in "${APPS[@]}"; do
  read -r name dockerfile reference <<<"$line"
  step "image-$name" "$(app_stamp "$dockerfile")" "$reference" "$images/$name.tar" \
    app_image "$name" "$dockerfile" "$reference" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
((failed == 0)) || die "an image failed to build (logs: $logs)"
write_env
forget_old_layers

bah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep "^localhost/modelrollout/" | sed 's/^/images:   /'
for line in "${APPS[@]}" "${TEST_IMAGE[0]}"; do
  read -r name _ <<<"$line"
  echo "images:   $images/$name.tar $(du -m "$images/$name.tar" | cut -f1) MB"
done
echo "images: ready in $images ($(since "$total_started")s); references and digests: $images/images.env"
