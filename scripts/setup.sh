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
  python3 python3-venv            # python-tuf, the reference TUF implementation, for interop tests
  dpkg-dev lintian                # the Debian packages: cargo-deb's dependency detection, their check
  systemd                         # systemd-analyze verify of the units, systemd-sysusers (package test)
  nginx                           # a real caching proxy in front of imaged (scale-out tests; slice module)
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
# cargo-deb builds the Debian packages (scripts/package.sh, docs/packages.md).
if ! command -v cargo-deb >/dev/null; then
  echo "setup: installing cargo-deb"
  cargo install cargo-deb --locked
fi
# Garage, S3-compatible object storage, for the e2e tests' 3-node cluster (tests/src/garage.rs;
# GARAGE names a binary elsewhere). Building it from source takes ~17 minutes on two cores.
if ! command -v "${GARAGE:-garage}" >/dev/null; then
  echo "setup: installing garage"
  cargo install garage --locked
fi
# python-tuf and securesystemslib from PyPI, pinned, in a virtual environment of their own
# (tests/e2e/interop.rs runs them: IMAGED_PYENV names it).
PYENV=${IMAGED_PYENV:-/var/tmp/imaged-pyenv}
PYPKGS=(tuf==6.0.0 "securesystemslib[crypto]==1.6.0")
if ! "$PYENV/bin/python" -c 'import tuf, securesystemslib, sys; sys.exit(tuf.__version__ != "6.0.0")' 2>/dev/null; then
  echo "setup: installing ${PYPKGS[*]} into $PYENV"
  python3 -m venv "$PYENV"
  "$PYENV/bin/pip" install -q --disable-pip-version-check "${PYPKGS[@]}"
fi
