#!/usr/bin/env bash
# Mount benchmark: imgfs vs squashfuse_ll and the native directory (warm walk and read of the
# rust tree), cold mount + `dpkg -l` of gen2 over HTTP on 127.0.0.1 (requests counted), the
# traffic of moving a fully cached gen1 to gen2, switch and rollback latency on gen1 and on
# the rust tree, imgfs memory, and the rust tree read again after the kernel dropped its pages
# (default mode vs --passthrough vs native). Prints tables; not a timed test. Needs the datasets.
#   SKIP_SQUASHFS=1 bench/mount.sh   (skips building the squashfs image, ~60 s)
#   SKIP_TRACE=1 bench/mount.sh      (skips section 6, which throttles the loopback to 10 MB/s with tc)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${IMAGED_DATASETS:-/var/tmp/imgbench}
for s in gen1 gen2 rust; do [[ -e $D/.$s.done ]] || { echo "dataset $s missing in $D: run ../shared/datasets/make-datasets.sh" >&2; exit 1; }; done
need=(); for c in squashfuse_ll:squashfuse mksquashfs:squashfs-tools bc:bc curl:curl; do command -v "${c%%:*}" >/dev/null || need+=("${c#*:}"); done
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -p tools -p imaged -p fs --locked -q
BIN=${CARGO_TARGET_DIR:-target}/release
W=$(mktemp -d /var/tmp/imaged-mount.XXXXXX)
MOUNTS=()
cleanup() {
  [[ -n ${THROTTLED:-} ]] && tc qdisc del dev lo root 2>/dev/null
  for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
  [[ -n ${IMAGED_PID:-} ]] && kill "$IMAGED_PID" 2>/dev/null
  sleep 0.5; rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { local t0=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(now) - $t0" | bc -l | xargs printf '%.2f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
walk() { find "$1" -printf '%i %s %m %n %U %G %T@\n' >/dev/null; }
readall() { tar -cf - -C "$1" . | cat >/dev/null; }

# The server with gen1, gen2 and the rust tree, each on a channel.
. bench/repository.sh
"$BIN/imgctl" --store "$W/img" channel set bench/debian debian@1 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set bench/debian2 debian@2 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set bench/debian-pre debian@1 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set bench/rust rust@1 >/dev/null

# mount_imgfs NAME CHANNEL: starts imgfs on a fresh cache and waits until it is mounted.
mount_imgfs() {
  local name=$1 channel=$2
  mkdir -p "$W/mnt-$name"
  "$BIN/imgfs" mount --server "$URL" --channel "$channel" --cache "$W/cache-$name" --root "$W/root.json" --poll-seconds 3600 "$W/mnt-$name" >/dev/null 2>"$W/imgfs-$name.log" &
  for _ in $(seq 600); do grep -qs "mounted" "$W/imgfs-$name.log" && break; sleep 0.01; done
  MOUNTS+=("$W/mnt-$name")
}
banner() { grep -o "mounted.*" "$W/imgfs-$1.log"; }
status() { "$BIN/imgfs" status "$W/mnt-$1" --json; }
traffic() { status "$1" | python3 -c 'import json,sys; t=json.load(sys.stdin)["traffic"]; print(t["requests"], t["bytes"])'; }

echo "== $(nproc) cores; $(uname -r); rust tree $(find "$D/rust" | wc -l) entries, $(du -sm --apparent-size "$D/rust" | cut -f1) MiB"

# 1. Warm walk and read of the rust tree.
mount_imgfs rust bench/rust
readall "$W/mnt-rust"; readall "$W/mnt-rust"     # fetch everything, warm the caches
# Files read to their end get plain copies in the background (READs read them): time until
# they are all written, then measure the steady state.
copies() { status "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cache"]["plain_copies"])'; }
settle() { local prev=-1 n; for _ in $(seq 300); do n=$(copies "$1"); [[ $n == "$prev" ]] && break; prev=$n; sleep 1; done; echo "$n"; }
t0=$(now); n_copies=$(settle rust); t_copies=$(echo "$(now) - $t0" | bc -l | xargs printf '%.0f')
walk "$D/rust"; readall "$D/rust"
w_img=$(secs walk "$W/mnt-rust"); r_img=$(secs readall "$W/mnt-rust")
w_nat=$(secs walk "$D/rust"); r_nat=$(secs readall "$D/rust")
if [[ -z ${SKIP_SQUASHFS:-} ]]; then
  mksquashfs "$D/rust" "$W/rust.sqfs" -comp zstd -noappend -quiet >/dev/null
  mkdir -p "$W/mnt-sq"; squashfuse_ll "$W/rust.sqfs" "$W/mnt-sq"; MOUNTS+=("$W/mnt-sq")
  walk "$W/mnt-sq"; readall "$W/mnt-sq"
  w_sq=$(secs walk "$W/mnt-sq"); r_sq=$(secs readall "$W/mnt-sq")
fi
rss=$(ps -o rss= -p "$(pgrep -f -- "--cache $W/cache-rust ")" | tr -d ' ')
printf '\n%-40s %10s %10s %10s %10s %10s\n' "rust tree, warm" "imgfs" "squashfuse" "native" "imgfs/sq" "imgfs/nat"
printf '%-40s %10s %10s %10s %10s %10s\n' "walk: find + stat every entry (s)" "$w_img" "${w_sq:--}" "$w_nat" "$( [[ -n ${w_sq:-} ]] && ratio "$w_img" "$w_sq" || echo -)" "$(ratio "$w_img" "$w_nat")"
printf '%-40s %10s %10s %10s %10s %10s\n' "read: tar of everything (s)" "$r_img" "${r_sq:--}" "$r_nat" "$( [[ -n ${r_sq:-} ]] && ratio "$r_img" "$r_sq" || echo -)" "$(ratio "$r_img" "$r_nat")"
printf '%-40s %10s\n' "imgfs resident memory, rust mounted (MiB)" "$((rss / 1024))"
printf '%-40s %10s\n' "plain copies written after the reads (s)" "$t_copies ($n_copies copies)"

# 2. Cold mount and dpkg -l of gen2 over HTTP.
mount_imgfs cold bench/debian2
banner=$(banner cold)
t_dpkg=$(secs chroot "$W/mnt-cold" /usr/bin/dpkg -l)
read -r req bytes < <(traffic cold)
printf '\n%-40s %10s\n' "gen2, cold cache, over HTTP" ""
printf '%-40s %10s\n' "mount" "$(echo "$banner" | grep -o 'in [0-9]* ms, [0-9]* requests' )"
printf '%-40s %10s\n' "chroot MNT dpkg -l (s)" "$t_dpkg"
printf '%-40s %10s\n' "requests in all (mount + dpkg -l)" "$req"

# 3. Moving a fully cached gen1 to gen2: what travels.
mount_imgfs upd bench/debian
readall "$W/mnt-upd"
read -r req0 bytes0 < <(traffic upd)
"$BIN/imgctl" --store "$W/img" channel set bench/debian debian@2 >/dev/null
sw1=$("$BIN/imgfs" update "$W/mnt-upd" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["millis"])')
readall "$W/mnt-upd"
read -r req1 bytes1 < <(traffic upd)
rb1=$("$BIN/imgfs" rollback "$W/mnt-upd" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["millis"])')
printf '\n%-40s %10s\n' "cache gen1 -> gen2 (all of gen2 read)" ""
printf '%-40s %10s\n' "bytes fetched (MiB)" "$(echo "($bytes1 - $bytes0) / 1048576" | bc -l | xargs printf '%.1f')"
printf '%-40s %10s\n' "requests" "$((req1 - req0))"
# The same move with `imgfs prefetch` of the new generation right after the switch.
mount_imgfs pre bench/debian-pre
readall "$W/mnt-pre"
read -r req0 bytes0 < <(traffic pre)
"$BIN/imgctl" --store "$W/img" channel set bench/debian-pre debian@2 >/dev/null
"$BIN/imgfs" update "$W/mnt-pre" >/dev/null
"$BIN/imgfs" prefetch "$W/mnt-pre" current >/dev/null
readall "$W/mnt-pre"
read -r req1 bytes1 < <(traffic pre)
printf '%-40s %10s\n' "with imgfs prefetch: bytes (MiB)" "$(echo "($bytes1 - $bytes0) / 1048576" | bc -l | xargs printf '%.1f')"
printf '%-40s %10s\n' "with imgfs prefetch: requests" "$((req1 - req0))"

# 4. Switch and rollback latency: gen1 (5k files) and the rust tree (52k files).
# rust@2 is the same tree re-imported (the dataset is shared and stays untouched): the switch
# still loads and verifies a new manifest, finds every tree already walked, and invalidates
# the root's entries.
"$BIN/imgctl" --store "$W/img" import "$D/rust" --image rust -m "bench: same tree again" >/dev/null 2>&1
"$BIN/imgctl" --store "$W/img" push rust@2 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set bench/rust rust@2 >/dev/null
sw2=$("$BIN/imgfs" update "$W/mnt-rust" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["millis"])')
rb2=$("$BIN/imgfs" rollback "$W/mnt-rust" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["millis"])')
printf '\n%-40s %10s %10s\n' "switch latency (ms)" "switch" "rollback"
printf '%-40s %10s %10s\n' "gen1 -> gen2 (5k files)" "$sw1" "$rb1"
printf '%-40s %10s %10s\n' "rust@1 -> rust@2 (52k files)" "$sw2" "$rb2"

# 5. The same read after the kernel dropped every page: the default mode (the kernel opens
# files itself; data comes from the compressed objects, decoded ahead) vs --passthrough (big files read from
# plain copies) vs native.
mkdir -p "$W/mnt-pt"
"$BIN/imgfs" mount --server "$URL" --channel bench/rust --cache "$W/cache-pt" --root "$W/root.json" --poll-seconds 3600 --passthrough "$W/mnt-pt" >/dev/null 2>"$W/imgfs-pt.log" &
for _ in $(seq 600); do grep -qs "mounted" "$W/imgfs-pt.log" && break; sleep 0.01; done
MOUNTS+=("$W/mnt-pt")
readall "$W/mnt-pt"; readall "$W/mnt-pt"
# Plain copies are written in the background: wait until their number stops growing.
n=$(settle pt); settle rust >/dev/null
# The disk of a shared machine is noisy: three rounds, each reading all three in turn; the
# median of each is printed, with the ratios to native of every round.
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; secs "$@"; }
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
rounds() { # rounds LABEL COMMAND PATH-UNDER-ROOTS...
  local label=$1 cmd=$2 rel=$3 a=() b=() c=() r=()
  for _ in 1 2 3; do
    a+=("$(cold $cmd "$W/mnt-rust$rel")"); b+=("$(cold $cmd "$W/mnt-pt$rel")"); c+=("$(cold $cmd "$D/rust$rel")")
    r+=("$(ratio "${a[-1]}" "${c[-1]}")")
  done
  printf '%-40s %10s %10s %10s   %s\n' "$label" "$(median "${a[@]}")" "$(median "${b[@]}")" "$(median "${c[@]}")" "${r[*]}"
}
printf '\n%-40s %10s %10s %10s   %s\n' "rust tree read, page cache dropped (s)" "imgfs" "passthru" "native" "imgfs/native per round"
rounds "tar of everything ($n plain copies)" readall ""
# The biggest file alone (sequential read of one file).
big=$(find "$D/rust/lib" -name 'librustc_driver-*.so' | head -1); rel=${big#"$D/rust"}
rounds "cat librustc_driver ($(( $(stat -c %s "$big") >> 20 )) MiB)" cat "$rel"
rss=$(ps -o rss= -p "$(pgrep -f -- "--cache $W/cache-rust ")" | tr -d ' ')
printf '%-40s %10s\n' "imgfs resident memory, rust read (MiB)" "$((rss / 1024))"

# 6. Trace-driven prefetch, the server throttled to 10 MB/s (tc on the loopback): a cold
# endpoint runs a program from the mount without a trace, with the generation's signed trace
# (its data fetched first, from the mount on, while the program runs), and after a full
# prefetch. Time from the mount's start to the program's end; requests and bytes fetched.
if [[ -z ${SKIP_TRACE:-} ]] && command -v tc >/dev/null; then
  printf 'fn main() { println!("hello"); }\n' > "$W/hello.rs"
  # gen2 has python3-minimal only (no json, no http.client): modules of its standard library.
  py() { chroot "$1" /usr/bin/python3 -c 'import email.parser, argparse, csv, datetime, configparser, base64'; }
  rc() { "$1/bin/rustc" -o "$W/hello-$2" "$W/hello.rs"; }
  # cold NAME CHANNEL PROGRAM [prefetch]: mount on a fresh cache, optionally prefetch it all,
  # run PROGRAM; prints "seconds requests MiB", and for a full prefetch the program's own
  # seconds (everything in imgfs's cache, nothing in the kernel's: the fully cached run).
  cold() {
    local name=$1 channel=$2 prog=$3 t0 tp; t0=$(now)
    mount_imgfs "$name" "$channel"
    [[ ${4:-} == full ]] && "$BIN/imgfs" prefetch "$W/mnt-$name" current >/dev/null
    tp=$(now)
    "$prog" "$W/mnt-$name" "$name" >/dev/null 2>&1 || { echo "failed: $prog on $name" >&2; exit 1; }
    local t=$(echo "$(now) - $t0" | bc -l | xargs printf '%.2f')
    local run=$(echo "$(now) - $tp" | bc -l | xargs printf '%.2f')
    # The signed trace's fetch may still be running: count what it fetched too.
    sleep 0.5
    read -r req bytes < <(traffic "$name")
    echo "$t $req $(echo "$bytes / 1048576" | bc -l | xargs printf '%.1f')${4:+ $run}"
    umount -l "$W/mnt-$name"   # run in a subshell: the cleanup's list does not see this mount
  }
  record() { # record NAME CHANNEL PROGRAM GENERATION: trace PROGRAM on a cold mount, attach it
    mount_imgfs "$1" "$2"
    "$BIN/imgfs" trace start "$W/mnt-$1" >/dev/null
    "$3" "$W/mnt-$1" "$1" >/dev/null 2>&1
    "$BIN/imgfs" trace stop "$W/mnt-$1" --out "$W/$1.trace" >/dev/null
    "$BIN/imgctl" --store "$W/img" trace add "$4" "$W/$1.trace" >/dev/null
  }
  # moved NAME FROM TO PROGRAM: a cold endpoint on FROM (its metadata only) is moved to TO,
  # whose signed trace's data the switch fetches before the mount moves; prints the update's
  # seconds, the program's seconds right after it, and the requests and MiB of both.
  moved() {
    local name=$1 ch=bench/moved-$1 t0 tp up
    "$BIN/imgctl" --store "$W/img" channel set "$ch" "$2" >/dev/null
    mount_imgfs "$name" "$ch"
    "$BIN/imgctl" --store "$W/img" channel set "$ch" "$3" >/dev/null
    read -r r0 b0 < <(traffic "$name")
    t0=$(now); "$BIN/imgfs" update "$W/mnt-$name" >/dev/null; up=$(echo "$(now) - $t0" | bc -l | xargs printf '%.2f')
    tp=$(now)
    "$4" "$W/mnt-$name" "$name" >/dev/null 2>&1 || { echo "failed: $4 on $name" >&2; exit 1; }
    local run=$(echo "$(now) - $tp" | bc -l | xargs printf '%.2f')
    read -r req bytes < <(traffic "$name")
    echo "$up $run $((req - r0)) $(echo "($bytes - $b0) / 1048576" | bc -l | xargs printf '%.1f')"
    umount -l "$W/mnt-$name"
  }
  rust_now=rust@2   # section 4 moved bench/rust there
  tc qdisc add dev lo root tbf rate 80mbit burst 128kb latency 100ms; THROTTLED=1
  py_none=$(cold py0 bench/debian2 py); py_full=$(cold py2 bench/debian2 py full)
  rc_none=$(cold rc0 bench/rust rc); rc_full=$(cold rc2 bench/rust rc full)
  tc qdisc del dev lo root; THROTTLED=
  record pyrec bench/debian2 py debian@2; record rcrec bench/rust rc "$rust_now"
  tc qdisc add dev lo root tbf rate 80mbit burst 128kb latency 100ms; THROTTLED=1
  py_trace=$(cold py1 bench/debian2 py); rc_trace=$(cold rc1 bench/rust rc)
  py_moved=$(moved py3 debian@1 debian@2 py); rc_moved=$(moved rc3 rust@1 "$rust_now" rc)
  tc qdisc del dev lo root; THROTTLED=
  # trace/full: the program with the trace against a full pull and then the program (Nydus's
  # comparison, 11 s against 126 s); trace/cached: against the program's run alone once all
  # is cached (the bytes it needs still cross the link first).
  printf '\n%-40s %22s %22s %22s %14s %12s %12s\n' "10 MB/s, cold cache: s / requests / MiB" "no trace" "signed trace" "full prefetch" "fully cached" "trace/full" "trace/cached"
  # The full prefetch's fields are "total requests MiB run": the run alone is the fully cached time.
  row() {
    local cached=${4##* } full=${4% *}
    printf '%-40s %22s %22s %22s %14s %12s %12s\n' "$1" "$(echo "$2" | tr ' ' /)" "$(echo "$3" | tr ' ' /)" "$(echo "$full" | tr ' ' /)" "$cached" "$(ratio "${3%% *}" "${4%% *}")x" "$(ratio "${3%% *}" "$cached")x"
  }
  row "gen2: python3 -c 'import email.parser, ...'" "$py_none" "$py_trace" "$py_full"
  row "rust: rustc hello.rs" "$rc_none" "$rc_trace" "$rc_full"
  # A switch to the generation waits for its trace's data (imgfs mount --warm-timeout): the
  # program then runs from the cache at once.
  printf '\n%-40s %22s %14s %14s %12s\n' "10 MB/s, switch from a cold endpoint" "update s/requests/MiB" "program s" "fully cached" "program/cached"
  mrow() {
    local cached=${3##* } up run req mib; read -r up run req mib <<<"$2"
    printf '%-40s %22s %14s %14s %12s\n' "$1" "$up/$req/$mib" "$run" "$cached" "$(ratio "$run" "$cached")x"
  }
  mrow "gen1 -> gen2: python3 -c 'import ...'" "$py_moved" "$py_full"
  mrow "rust@1 -> $rust_now: rustc hello.rs" "$rc_moved" "$rc_full"
fi
