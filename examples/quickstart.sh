#!/usr/bin/env bash
# From nothing to a pypod job that ran in a real pod:
#   1. install pypod (and its test extras) from this checkout;
#   2. if kubectl's config reaches no cluster, build (first time: ~20 min) and start
#      the local harness cluster, and use its registry;
#   3. run examples/hello/main.py as a job: pypod ships the source as one image layer.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[test]'

if [ -z "${IMAGE_REPO:-}" ] || ! kubectl cluster-info >/dev/null 2>&1; then
  python3 -m harness up
  eval "$(python3 -m harness env)"
fi

cd examples/hello
pypod run main.py "hello from the quickstart"
