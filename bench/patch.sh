#!/usr/bin/env bash
# Patch benchmark: `imgctl patch` vs the old way (copy the tree, apt-get in a plain chroot,
# import the copy) and ostree, on the same data in the same run; then a small patch of the rust
# tree against its full import. Prints one table; not a timed test. Needs the datasets
# (make-datasets.sh), root (chroot, mounts) and the network (apt-get against gen1's mirror).
#   bench/patch.sh                  builds imgctl (release) and runs
#   IMGCTL=path/to/imgctl bench/patch.sh   uses that binary, no build
set -euo pipefail
cd "$(dirname "$0")/.."
D=${IMAGED_DATASETS:-/var/tmp/imgbench}
for s in gen1 rust; do [[ -e $D/.$s.done ]] || { echo "dataset $s missing in $D: run ../shared/datasets/make-datasets.sh" >&2; exit 1; }; done
[[ $(id -u) == 0 ]] || { echo "bench/patch.sh needs root (chroot, mounts, imgctl patch)" >&2; exit 1; }
need=(); for c in ostree:ostree bc:bc jq:jq; do command -v "${c%%:*}" >/dev/null || need+=("${c#*:}"); done
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
if [[ -z ${IMGCTL:-} ]]; then
  cargo build --release -p tools --locked -q
  IMGCTL=${CARGO_TARGET_DIR:-target}/release/imgctl
fi
W=$(mktemp -d /var/tmp/imaged-bench.XXXXXX)
C=$W/copy   # the old way's working copy; its chroot mounts are undone before anything is removed
unmount_chroot() { for m in dev/pts dev sys proc; do mountpoint -q "$C/$m" 2>/dev/null && umount "$C/$m"; done; return 0; }
trap 'unmount_chroot; rm -rf --one-file-system "$W"' EXIT

now() { date +%s.%N; }
secs() { local t0=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(now) - $t0" | bc -l | xargs printf '%.2f'; }
# secs, keeping the command's standard output (a --json report) in $1.
secs_to() { local out=$1; shift; local t0=$(now); "$@" >"$out" 2>"$out.err" || { echo "failed: $*" >&2; cat "$out.err" >&2; exit 1; }; echo "$(now) - $t0" | bc -l | xargs printf '%.2f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
ms() { echo "$1 / 1000" | bc -l | xargs printf '%.2f'; }
mib() { echo "$1 / 1048576" | bc -l | xargs printf '%.1f'; }
warm() { tar -cf - -C "$1" . | cat >/dev/null; }   # every tool starts with a warm page cache
row() { printf '%-58s %10s %12s\n' "$@"; }

g1=$D/gen1; R=$D/rust
APT='apt-get update && apt-get install -y --no-install-recommends python3-minimal less procps && apt-get clean'
# The old way's step: the same command in a plain chroot (make-datasets.sh's approach: /proc,
# the host's resolv.conf; here also /sys, /dev, /dev/pts and a policy-rc.d that starts no
# service, as the sandbox has), then apt's lists removed (imgctl patch leaves them out).
chroot_install() {
  local rc=0
  mount -t proc proc "$C/proc" && mount --bind /sys "$C/sys" && mount --bind /dev "$C/dev" && mount --bind /dev/pts "$C/dev/pts" || return 1
  cp -a "$C/etc/resolv.conf" "$W/resolv.conf.orig" 2>/dev/null || true
  cp /etc/resolv.conf "$C/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$C/usr/sbin/policy-rc.d"; chmod 755 "$C/usr/sbin/policy-rc.d"
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive \
    chroot "$C" /bin/sh -c "$APT && rm -rf /var/lib/apt/lists/*" || rc=$?
  rm -f "$C/usr/sbin/policy-rc.d"
  if [[ -e $W/resolv.conf.orig ]]; then cp -a "$W/resolv.conf.orig" "$C/etc/resolv.conf"; else rm -f "$C/etc/resolv.conf"; fi
  unmount_chroot
  return "$rc"
}

warm "$g1"
echo "== gen1: $(find "$g1" -type f | wc -l) files, $(du -sm --apparent-size "$g1" | cut -f1) MiB; $(nproc) cores; $(uname -r); /var/tmp on $(stat -f -c %T /var/tmp)"
echo "== patch: $APT"
echo "== apt sources of gen1: $(grep -hsE '^deb ' "$g1/etc/apt/sources.list" | head -n1)"

# a. imgctl patch os@1 -> os@2 (the store holds gen1 as os@1).
"$IMGCTL" --store "$W/a" import "$g1" --image os >/dev/null 2>&1
warm "$g1"
t_patch=$(secs_to "$W/patch.json" "$IMGCTL" --store "$W/a" --json patch os@1 --run "$APT")
P=$W/patch.json
p_total=$(ms "$(jq .total_ms "$P")"); p_step=$(ms "$(jq '[.steps[].duration_ms] | add' "$P")"); p_commit=$(ms "$(jq .commit_ms "$P")")
p_read=$(jq .files_read "$P"); p_new=$(jq .new_objects "$P"); p_bytes=$(mib "$(jq .stored_bytes "$P")"); p_changed=$(jq .changed_paths "$P")
p_files=$("$IMGCTL" --store "$W/a" --json show os@2 | jq .stats.files)

# b. The old way: cp -a, apt-get in a chroot, imgctl import of the copy as os@2 of an image whose
#    os@1 is gen1 (objects deduplicated against it; the copy's files are new to the import index,
#    so each is read). Also, untimed before the install, the copy imported into a second store:
#    its re-import afterwards shows the index at work (only files whose stat changed are read).
"$IMGCTL" --store "$W/b" import "$g1" --image os >/dev/null 2>&1
warm "$g1"
t_cp=$(secs cp -a "$g1" "$C")
sleep 2   # past the index's racy window, so the next import records every file
"$IMGCTL" --store "$W/b2" import "$C" --image os >/dev/null 2>&1
t_inst=$(secs_to "$W/install.log" chroot_install)
warm "$C"
t_imp=$(secs_to "$W/imp.json" "$IMGCTL" --store "$W/b" --json import "$C" --image os)
i_read=$(jq .files_read "$W/imp.json"); i_new=$(jq .stats.new_objects "$W/imp.json"); i_bytes=$(mib "$(jq .stored_bytes "$W/imp.json")")
i_files=$(jq .stats.files "$W/imp.json")
t_imp2=$(secs_to "$W/imp2.json" "$IMGCTL" --store "$W/b2" --json import "$C" --image os)
i2_read=$(jq .files_read "$W/imp2.json")
t_old=$(echo "$t_cp + $t_inst + $t_imp" | bc -l | xargs printf '%.2f')

# c. ostree: gen1 committed to an archive repo, then the installed copy (timed). ostree refuses
#    device nodes and fifos: both trees without them (as bench/import.sh does).
ostree init --repo="$W/ost" --mode=archive
cp -al "$g1" "$W/g1-ost"
find "$W/g1-ost" "$C" \( -type b -o -type c -o -type p -o -type s \) -delete
ostree commit --repo="$W/ost" --branch=os --tree=dir="$W/g1-ost" >/dev/null
warm "$C"
t_ost=$(secs ostree commit --repo="$W/ost" --branch=os --tree=dir="$C")
unmount_chroot; rm -rf --one-file-system "$C" "$W/g1-ost" "$W"/a "$W"/b "$W"/b2 "$W/ost"

# d. The rust tree: a full import, then a small patch (no shell in the tree: host tools, cwd = root).
warm "$R"
t_rimp=$(secs_to "$W/rimp.json" "$IMGCTL" --store "$W/r" --json import "$R" --image rust)
t_rpatch=$(secs_to "$W/rpatch.json" "$IMGCTL" --store "$W/r" --json patch rust@1 --network none --run 'rm bin/rustdoc && echo x > new-file')
RP=$W/rpatch.json
r_total=$(ms "$(jq .total_ms "$RP")"); r_commit=$(ms "$(jq .commit_ms "$RP")"); r_read=$(jq .files_read "$RP")
r_new=$(jq .new_objects "$RP"); r_changed=$(jq .changed_paths "$RP"); r_files=$(jq .stats.files "$W/rimp.json")

printf '\n'; row "gen1 -> gen2 (apt-get install in the image)" "seconds" "ratio"
row "imgctl patch os@1 (wall)" "$t_patch" ""
row "  its report: total_ms" "$p_total" ""
row "  of which the apt step" "$p_step" ""
row "  of which the commit (commit_ms)" "$p_commit" ""
row "old way: total (copy + install + import)" "$t_old" ""
row "  cp -a gen1" "$t_cp" ""
row "  apt-get in a plain chroot (+ rm apt lists)" "$t_inst" ""
row "  imgctl import of the copy as os@2" "$t_imp" ""
row "  (same import, copy already indexed as os@1)" "$t_imp2" ""
row "ostree commit of the copy (archive repo holds gen1)" "$t_ost" ""
row "patch wall / old way total" "" "$(ratio "$t_patch" "$t_old")"
row "patch without its apt step / old way without the install" "" "$(ratio "$(echo "$t_patch - $p_step" | bc -l)" "$(echo "$t_old - $t_inst" | bc -l)")"
row "patch commit / import of the copy" "" "$(ratio "$p_commit" "$t_imp")"
row "patch commit / import of the indexed copy" "" "$(ratio "$p_commit" "$t_imp2")"
row "patch commit / ostree commit" "" "$(ratio "$p_commit" "$t_ost")"
row "import of the copy / ostree commit" "" "$(ratio "$t_imp" "$t_ost")"

printf '\n'; row "gen1 -> gen2: what was read and stored" "patch" "old import"
row "files read" "$p_read" "$i_read"
row "  (import of the indexed copy)" "" "$i2_read"
row "new objects" "$p_new" "$i_new"
row "new bytes stored (MiB, compressed)" "$p_bytes" "$i_bytes"
row "files in the new generation" "$p_files" "$i_files"
row "paths the patch's layer changed" "$p_changed" ""

printf '\n'; row "rust tree ($r_files files): small patch" "seconds" "ratio"
row "imgctl import rust@1 (full, wall)" "$t_rimp" "1.00"
row "imgctl patch rust@1 (rm bin/rustdoc, add a file; wall)" "$t_rpatch" "$(ratio "$t_rpatch" "$t_rimp")"
row "  its report: total_ms" "$r_total" "$(ratio "$r_total" "$t_rimp")"
row "  commit (commit_ms)" "$r_commit" "$(ratio "$r_commit" "$t_rimp")"
row "  files read / new objects / changed paths" "$r_read / $r_new / $r_changed" ""
