#!/usr/bin/env bash
# Builds the Debian packages `imaged` (imaged, imgctl, imaged.service) and `imgfs` (imgfs,
# its units, mount.fuse.imgfs) with cargo-deb from binaries already built, with their man
# pages and shell completions generated from the binaries themselves (docs/packages.md):
#
#   cargo build --release -p imaged -p tools -p fs --bins --locked
#   scripts/package.sh [OUTDIR]          # default: $CARGO_TARGET_DIR/debian
#
# PROFILE picks the Cargo profile whose binaries are packaged (default release; `dev` takes
# the debug build). Binaries are stripped either way. FAST=1 compresses quickly rather than
# small (the tests' packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
case $PROFILE in
  dev | debug) PROFILE=dev DIR=debug ;;
  *) DIR=$PROFILE ;;
esac
BIN=$TARGET/$DIR
OUT=${1:-$TARGET/debian}
command -v cargo-deb >/dev/null || { echo "package: cargo-deb not found: run scripts/setup.sh" >&2; exit 1; }
for b in imaged imgctl imgfs; do
  [[ -x $BIN/$b ]] || { echo "package: $BIN/$b not found: cargo build --profile $PROFILE -p imaged -p tools -p fs --bins" >&2; exit 1; }
done

# Man pages and completions go where cargo-deb's assets name them: target/release/packaging/
# in the Cargo.toml files is the profile's directory.
GEN=$BIN/packaging
rm -rf "$GEN"
mkdir -p "$GEN/man" "$GEN/completions"
for b in imaged imgctl imgfs; do
  "$BIN/$b" man "$GEN/man/$b"
  gzip -9n "$GEN/man/$b"/*.1
  "$BIN/$b" completions bash >"$GEN/completions/$b.bash"
  "$BIN/$b" completions zsh >"$GEN/completions/_$b"
  "$BIN/$b" completions fish >"$GEN/completions/$b.fish"
done
gzip -9n <packaging/imgfs/mount.fuse.imgfs.8 >"$GEN/man/mount.fuse.imgfs.8.gz"

# cargo-deb writes no md5sums, which `dpkg --verify` and debsums check files against: the
# package is unpacked, given them, and packed again (compressed here, not by cargo-deb).
add_md5sums() {
  local deb=$1 dir
  dir=$(mktemp -d)
  dpkg-deb -R "$deb" "$dir"
  (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0r md5sum >DEBIAN/md5sums)
  dpkg-deb --root-owner-group "${COMPRESS[@]}" -b "$dir" "$deb" >/dev/null
  rm -rf "$dir"
}

mkdir -p "$OUT"
COMPRESS=(-Zxz)
[[ ${FAST:-0} == 1 ]] && COMPRESS=(-Zgzip -z1)
for crate in imaged fs; do
  deb=$(cargo deb -p "$crate" --no-build --profile "$PROFILE" --strip --fast --output "$OUT" --quiet | tail -n1)
  [[ -f $deb ]] || { echo "package: cargo deb -p $crate made no package" >&2; exit 1; }
  add_md5sums "$deb"
  echo "$deb"
done

# LINTIAN=1: check both packages; what lintian still says is explained in the packages'
# overrides (packaging/*/lintian-overrides) and docs/packages.md.
if [[ ${LINTIAN:-0} == 1 ]]; then
  lintian --display-info --pedantic --fail-on error,warning "$OUT"/imaged_*.deb "$OUT"/imgfs_*.deb
fi
