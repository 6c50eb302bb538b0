#!/usr/bin/env bash
# Installs imaged, imgctl and imgfs from the release build into $PREFIX/bin (default
# /usr/local). mount(8) runs file system helpers without the caller's PATH, so
# `mount -t fuse.imgfs` and fstab lines find imgfs only where it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
TARGET=${CARGO_TARGET_DIR:-target}
install -d "$PREFIX/bin"
install -m 0755 "$TARGET/release/imaged" "$TARGET/release/imgctl" "$TARGET/release/imgfs" "$TARGET/release/imaged-conformance-client" "$PREFIX/bin/"
echo "install: imaged, imgctl, imgfs, imaged-conformance-client in $PREFIX/bin"
