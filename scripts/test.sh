#!/usr/bin/env bash
# The whole test suite: system packages, real test data, a release build of every binary, then
# every test of the workspace. Needs root (FUSE, device nodes, tmpfs mounts, chown).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
DATASETS=${IMAGED_DATASETS:-/var/tmp/imgbench}
SHARED=${IMAGED_SHARED:-$(cd .. && pwd)/shared}
if [[ -x $SHARED/datasets/make-datasets.sh ]]; then
  "$SHARED/datasets/make-datasets.sh" "$DATASETS"
else
  echo "test: $SHARED/datasets/make-datasets.sh not found; set IMAGED_SHARED" >&2; exit 1
fi
export IMAGED_DATASETS=$DATASETS
cargo build --release --workspace --bins --locked
cargo test --release --workspace --locked
