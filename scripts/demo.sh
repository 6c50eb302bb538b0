#!/usr/bin/env bash
# The demo on embedded defaults: build, import a small OS-like tree as generation 1, patch it,
# import generation 2, compare, export, verify. Later stages (server, mount) extend it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace --bins --locked
IMGCTL=$PWD/target/release/imgctl
[[ -n ${CARGO_TARGET_DIR:-} ]] && IMGCTL=$CARGO_TARGET_DIR/release/imgctl
WORK=$(mktemp -d /tmp/imaged-demo.XXXXXX)
export IMGCTL_STORE=$WORK/store
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build a small root tree from this machine's files"
mkdir -p "$WORK/root/usr/bin" "$WORK/root/etc" "$WORK/root/var/lib/dpkg"
cp -a /bin/sh /usr/bin/env /usr/bin/ls "$WORK/root/usr/bin/"
cp -a /etc/os-release /etc/passwd "$WORK/root/etc/"
printf 'Package: demo-tool\nStatus: install ok installed\nVersion: 1.0\n\n' >"$WORK/root/var/lib/dpkg/status"
echo "tree: $(find "$WORK/root" | wc -l) entries"

step "import generation 1"
"$IMGCTL" import "$WORK/root" --image demo -m "initial image"

step "patch once: upgrade demo-tool, add a config file, import generation 2"
printf 'Package: demo-tool\nStatus: install ok installed\nVersion: 1.1\n\nPackage: new-lib\nStatus: install ok installed\nVersion: 0.3\n\n' >"$WORK/root/var/lib/dpkg/status"
echo "patched=yes" >"$WORK/root/etc/demo.conf"
"$IMGCTL" import "$WORK/root" --image demo -m "patch: demo-tool 1.1"

step "history, listing, a file, and what changed"
"$IMGCTL" log demo
"$IMGCTL" ls demo@2:etc
"$IMGCTL" cat demo@2:etc/demo.conf
"$IMGCTL" diff demo@1 demo@2

step "export generation 1 (a rollback target) and verify the store"
"$IMGCTL" export demo@1 "$WORK/export-1"
"$IMGCTL" verify
echo
echo "demo finished; everything is under $WORK"
