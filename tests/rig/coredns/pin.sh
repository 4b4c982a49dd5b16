#!/usr/bin/env bash
# Re-pin this module to COREDNS_VERSION in ../versions.env and tidy it. Run after a version bump;
# build_dns.sh refuses to build when go.mod and versions.env disagree.
set -euo pipefail
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
source "$here/../versions.env"
sed -i "s#^require github.com/coredns/coredns .*#require github.com/coredns/coredns $COREDNS_VERSION#" "$here/go.mod"
# tidy keeps the require line; drop the old indirect requirements first.
awk '/^require \($/ { skip = 1; next } skip && /^\)$/ { skip = 0; next } !skip' "$here/go.mod" > "$here/go.mod.new"
mv "$here/go.mod.new" "$here/go.mod"
rm -f "$here/go.sum"
(cd "$here" && go mod tidy)
grep -q "^require github.com/coredns/coredns $COREDNS_VERSION\$" "$here/go.mod"
