#!/usr/bin/env bash
# Import benchmark: imgctl vs casync, ostree (archive repo) and mksquashfs on the same data in
# the same run. Prints one table; not a timed test. Needs the datasets (make-datasets.sh).
#   bench/import.sh            full run (rust tree, gen1 -> gen2)
#   SKIP_HIGH=1 bench/import.sh  skip the slow high-compression imports
set -euo pipefail
cd "$(dirname "$0")/.."
D=${IMAGED_DATASETS:-/var/tmp/imgbench}
for s in gen1 gen2 rust; do [[ -e $D/.$s.done ]] || { echo "dataset $s missing in $D: run ../shared/datasets/make-datasets.sh" >&2; exit 1; }; done
need=(); for c in casync:casync ostree:ostree mksquashfs:squashfs-tools bc:bc; do command -v "${c%%:*}" >/dev/null || need+=("${c#*:}"); done
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -p tools --locked -q
IMGCTL=${CARGO_TARGET_DIR:-target}/release/imgctl
W=$(mktemp -d /var/tmp/imaged-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

now() { date +%s.%N; }
secs() { local t0=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(now) - $t0" | bc -l | xargs printf '%.2f'; }
mib() { echo "$(du -scb --apparent-size "$@" | tail -1 | cut -f1) / 1048576" | bc -l | xargs printf '%.1f'; }
disk() { echo "$(du -scB1 "$@" | tail -1 | cut -f1) / 1048576" | bc -l | xargs printf '%.1f'; }
# An imgctl store's objects: loose ones and packs (not refs or the import index, a cache).
img_bytes() { du -scb --apparent-size "$1/objects" "$1/packs" | tail -1 | cut -f1; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
warm() { tar -cf - -C "$1" . | cat >/dev/null; }   # every tool starts with a warm page cache

R=$D/rust
warm "$R"
echo "== rust tree: $(find "$R" -type f | wc -l) files, $(du -sm --apparent-size "$R" | cut -f1) MiB; $(nproc) cores; $(uname -r); /var/tmp on $(stat -f -c %T /var/tmp)"

t_img=$(secs "$IMGCTL" --store "$W/img" import "$R" --image rust)
t_re=$(secs "$IMGCTL" --store "$W/img" import "$R" --image rust)
t_cas=$(secs casync make --store="$W/casync.castr" "$W/rust.caidx" "$R")
ostree init --repo="$W/ostree" --mode=archive
t_ost=$(secs ostree commit --repo="$W/ostree" --branch=rust --tree=dir="$R")
t_sq=$(secs mksquashfs "$R" "$W/rust.sqfs" -comp zstd -noappend -quiet)
s_img=$(mib "$W/img/objects" "$W/img/packs"); d_img=$(disk "$W/img/objects" "$W/img/packs")
s_cas=$(mib "$W/casync.castr"); d_cas=$(disk "$W/casync.castr")
s_ost=$(mib "$W/ostree/objects"); d_ost=$(disk "$W/ostree/objects")
s_sq=$(mib "$W/rust.sqfs")

printf '\n%-44s %10s %10s\n' "rust tree import" "seconds" "imgctl/x"
printf '%-44s %10s %10s\n' "imgctl import" "$t_img" "1.00"
printf '%-44s %10s %10s\n' "casync make" "$t_cas" "$(ratio "$t_img" "$t_cas")"
printf '%-44s %10s %10s\n' "ostree commit (archive)" "$t_ost" "$(ratio "$t_img" "$t_ost")"
printf '%-44s %10s %10s\n' "mksquashfs -comp zstd" "$t_sq" "$(ratio "$t_img" "$t_sq")"
printf '%-44s %10s %10s\n' "imgctl re-import, unchanged" "$t_re" "$(ratio "$t_re" "$t_img") of full"

printf '\n%-44s %10s %10s %10s\n' "store size (MiB)" "apparent" "on disk" "imgctl/x"
printf '%-44s %10s %10s %10s\n' "imgctl store (zstd default level)" "$s_img" "$d_img" "1.00"
printf '%-44s %10s %10s %10s\n' "casync store" "$s_cas" "$d_cas" "$(ratio "$s_img" "$s_cas")"
printf '%-44s %10s %10s %10s\n' "ostree archive repo" "$s_ost" "$d_ost" "$(ratio "$s_img" "$s_ost")"
printf '%-44s %10s %10s %10s\n' "squashfs image (zstd)" "$s_sq" "$s_sq" "$(ratio "$s_img" "$s_sq")"
if [[ -z ${SKIP_HIGH:-} ]]; then
  t_hi=$(secs "$IMGCTL" --store "$W/img-hi" import "$R" --image rust --level 19 --chunk-avg 262144)
  t_sqhi=$(secs mksquashfs "$R" "$W/rust-hi.sqfs" -comp zstd -Xcompression-level 22 -b 1M -noappend -quiet)
  s_hi=$(mib "$W/img-hi/objects" "$W/img-hi/packs"); s_sqhi=$(mib "$W/rust-hi.sqfs")
  printf '%-44s %10s %10s %10s\n' "imgctl --level 19 --chunk-avg 256K (${t_hi} s)" "$s_hi" "$(disk "$W/img-hi/objects" "$W/img-hi/packs")" "$(ratio "$s_hi" "$s_sq")"
  printf '%-44s %10s %10s %10s\n' "squashfs, zstd 22, 1 MiB blocks (${t_sqhi} s)" "$s_sqhi" "$s_sqhi" "$(ratio "$s_hi" "$s_sqhi")"
fi
rm -rf "$W"/img* "$W"/casync* "$W"/ostree "$W"/*.sqfs

# gen1 -> gen2: bytes a store grows by when the patched generation is added.
g1=$D/gen1; g2=$D/gen2
warm "$g1"; warm "$g2"
"$IMGCTL" --store "$W/img" import "$g1" --image debian >/dev/null 2>&1
a=$(img_bytes "$W/img")
"$IMGCTL" --store "$W/img" import "$g2" --image debian >/dev/null 2>&1
b=$(img_bytes "$W/img")
casync make --store="$W/cas.castr" "$W/g1.caidx" "$g1" >/dev/null
c=$(du -sb --apparent-size "$W/cas.castr" | cut -f1)
casync make --store="$W/cas.castr" "$W/g2.caidx" "$g2" >/dev/null
e=$(du -sb --apparent-size "$W/cas.castr" | cut -f1)
# ostree refuses device nodes and fifos: give it hard-linked copies without them (0 bytes each).
for s in gen1 gen2; do cp -al "$D/$s" "$W/$s-ost"; find "$W/$s-ost" \( -type b -o -type c -o -type p -o -type s \) -delete; done
ostree init --repo="$W/ost" --mode=archive
ostree commit --repo="$W/ost" --branch=debian --tree=dir="$W/gen1-ost" >/dev/null
f=$(du -sb --apparent-size "$W/ost/objects" | cut -f1)
ostree commit --repo="$W/ost" --branch=debian --tree=dir="$W/gen2-ost" >/dev/null
g=$(du -sb --apparent-size "$W/ost/objects" | cut -f1)
n_img=$(echo "($b - $a) / 1048576" | bc -l | xargs printf '%.1f')
n_cas=$(echo "($e - $c) / 1048576" | bc -l | xargs printf '%.1f')
n_ost=$(echo "($g - $f) / 1048576" | bc -l | xargs printf '%.1f')
printf '\n%-44s %10s %10s\n' "gen2 after gen1: bytes newly stored (MiB)" "MiB" "imgctl/x"
printf '%-44s %10s %10s\n' "imgctl" "$n_img" "1.00"
printf '%-44s %10s %10s\n' "casync" "$n_cas" "$(ratio "$n_img" "$n_cas")"
printf '%-44s %10s %10s\n' "ostree" "$n_ost" "$(ratio "$n_img" "$n_ost")"
