#!/usr/bin/env bash
# phase.sh NAME COMMAND...: run one phase of the build or test run and say how long it took, pass or fail,
# so a CI log shows where its minutes went (rig build, image build, lint, unit, integration, e2e).
set -uo pipefail
name="$1"; shift
started=$(date +%s)
"$@"
status=$?
echo "phase: $name $(( $(date +%s) - started ))s ($([[ $status -eq 0 ]] && echo passed || echo "failed, exit $status"))"
exit "$status"
