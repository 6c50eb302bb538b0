#!/usr/bin/env bash
# Installs the system packages imaged needs to build and test on Debian. Idempotent: packages
# already present are not reinstalled, and apt is not touched when nothing is missing.
set -euo pipefail
PKGS=(
  clang libclang-dev pkg-config   # rocksdb's bindgen (server)
  fuse3 libfuse3-dev              # FUSE mounts (endpoint)
  debootstrap                     # real Debian test data (shared/datasets/make-datasets.sh)
  tar gzip zstd attr acl util-linux # archives in tests, xattr tools, setpriv
  curl                            # the demo reads the server's metrics
  openssl                         # the external-signer test holds a key the way a token would
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2; exit 1; }
