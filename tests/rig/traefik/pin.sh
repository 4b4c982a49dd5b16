#!/usr/bin/env bash
# Re-pin this module to TRAEFIK_VERSION in ../versions.env and tidy it. Run after a version bump;
# build_gateway.sh refuses to build when go.mod and versions.env disagree. A bump may need the replace
# directives in go.mod revisited: they mirror Traefik's own (see the comments there).
set -euo pipefail
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
# The checksum database does not know these module versions (the module proxy serves them): their hashes
# are recorded in go.sum on first download instead, and every later build verifies against go.sum.
export GONOSUMDB="github.com/akamai/AkamaiOPEN-edgegrid-golang,github.com/go-acme/alidns-20150109,github.com/go-acme/esa-20240910,github.com/nrdcg/oci-go-sdk"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
source "$here/../versions.env"
sed -i "s#^require github.com/traefik/traefik/v3 .*#require github.com/traefik/traefik/v3 $TRAEFIK_VERSION#" "$here/go.mod"
# tidy keeps the require line and the replace directives; drop the old indirect requirements first.
awk '/^require \($/ { skip = 1; next } skip && /^\)$/ { skip = 0; next } !skip' "$here/go.mod" > "$here/go.mod.new"
mv "$here/go.mod.new" "$here/go.mod"
rm -f "$here/go.sum"
(cd "$here" && go mod tidy)
grep -q "^require github.com/traefik/traefik/v3 $TRAEFIK_VERSION\$" "$here/go.mod"
