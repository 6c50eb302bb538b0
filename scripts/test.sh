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
# The mount(8) test runs imgfs the way fstab does: from the default PATH.
./scripts/install.sh
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
cargo test --release --workspace --locked 2>&1 | tee "$LOG"
# One closing line with the totals of every test binary above.
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
