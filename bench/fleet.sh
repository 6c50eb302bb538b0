#!/usr/bin/env bash
# Fleet benchmark (issue 14): one imaged on 127.0.0.1 and a load generator (tests/src/bin/
# fleet-load.rs) playing N enrolled endpoints, each with its own ed25519 key, in one run:
#   1. enrollment and sessions (rates; enrollment writes and syncs one record at a time);
#   2. conditional check-ins answered 304, per second, with p50/p99 latency;
#   3. report batches (a switch and a cache event each), endpoints' reports per second, p50/p99;
#   4. STREAMS event streams held open: imaged's resident memory per stream;
#   5. compliance of the channel over all N endpoints (median of 3 requests);
#   6. (AGENTS=50) the emergency plan with AGENTS real agents: rollout start to all healthy.
# Prints one table with the goals; not a timed test. The generator and imaged share the machine.
#   N=100000 C=64 DURATION=10 STREAMS=10000 bench/fleet.sh
#   HISTORY=50 bench/fleet.sh     # each endpoint first reports 50 events (a fleet that has run a while)
#   BIN=/path/to/target/release bench/fleet.sh     # use built binaries, skip the build
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
C=${C:-64}
# A rollout of the channel runs during the check-ins (the normal plan, stuck waiting for
# healthy endpoints at its 1% stage): ROLLOUT= turns it off.
ROLLOUT=${ROLLOUT-bench@1}
DURATION=${DURATION:-10}
STREAMS=${STREAMS:-10000}
HISTORY=${HISTORY:-0}
need=(); for c in curl:curl awk:gawk; do command -v "${c%%:*}" >/dev/null || need+=("${c#*:}"); done
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
if [[ -z ${BIN:-} ]]; then
  # The whole workspace: building a package alone changes features and rebuilds rocksdb.
  cargo build --release --workspace --locked -q
  BIN=${CARGO_TARGET_DIR:-target}/release
fi
# Every held stream is a socket in each process; both inherit this limit (raised to the hard
# limit when it cannot go higher: raising that needs CAP_SYS_RESOURCE).
want=$(( STREAMS + 4096 > 65536 ? STREAMS + 4096 : 65536 ))
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= STREAMS + 1024 )) || { echo "open files limit $(ulimit -n) is too low for $STREAMS streams" >&2; exit 1; }
W=$(mktemp -d /var/tmp/imaged-fleet.XXXXXX)
cleanup() { [[ -n ${IMAGED_PID:-} ]] && kill "$IMAGED_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

# A tiny image with two generations; the channel names the second, endpoints run the first.
mkdir -p "$W/tree/etc"
echo "bench one" >"$W/tree/etc/motd"; "$BIN/imgctl" --store "$W/img" import "$W/tree" --image bench >/dev/null 2>&1
echo "bench two" >"$W/tree/etc/motd"; "$BIN/imgctl" --store "$W/img" import "$W/tree" --image bench >/dev/null 2>&1
"$BIN/imaged" serve --data "$W/srv" --listen 127.0.0.1:0 2>"$W/imaged.log" &
IMAGED_PID=$!
for _ in $(seq 300); do grep -q "listening on" "$W/imaged.log" && break; sleep 0.1; done
URL=$(sed -n 's/.*imaged listening on //p' "$W/imaged.log" | head -1)
[[ -n $URL ]] || { cat "$W/imaged.log" >&2; exit 1; }
export IMAGED_SERVER=$URL IMAGED_TOKEN=$(cat "$W/srv/admin.token")
"$BIN/imgctl" --store "$W/img" push bench@1 >/dev/null
"$BIN/imgctl" --store "$W/img" push bench@2 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set bench/stable bench@1 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set bench/stable bench@2 >/dev/null

echo "== $N endpoints, $C connections, ${DURATION}s per timed phase, $STREAMS streams, $HISTORY events of history each; $(nproc) cores; $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); generator and imaged on one machine"
"$BIN/fleet-load" --endpoints "$N" --concurrency "$C" --duration "$DURATION" --streams "$STREAMS" --history "$HISTORY" \
  --channel bench/stable --running bench@1 --pid "$IMAGED_PID" ${ROLLOUT:+--rollout-to "$ROLLOUT"} | tee "$W/results.txt"
rss_end=$(awk '/^VmRSS/ {print $2}' "/proc/$IMAGED_PID/status")

# One value of a RESULT line: val PHASE KEY
val() { awk -v p="phase=$1" -v k="$2" '$1 == "RESULT" && $2 == p { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print substr($i, length(k) + 2) } }' "$W/results.txt"; }
meets() { awk -v v="$1" -v g="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? v + 0 >= g + 0 : v + 0 < g + 0; print ok ? "met" : "NOT MET" }'; }

printf '\n%-46s %14s %10s %10s %14s\n' "fleet, $N endpoints" "per second" "p50 ms" "p99 ms" "goal"
printf '%-46s %14s %10s %10s %14s\n' "enroll (one synced write each)" "$(val enroll per_second)" "$(val enroll p50_ms)" "$(val enroll p99_ms)" ""
printf '%-46s %14s %10s %10s %14s\n' "open a session" "$(val session per_second)" "$(val session p50_ms)" "$(val session p99_ms)" ""
printf '%-46s %14s %10s %10s %14s\n' "first check-in (200, actual recorded)" "$(val checkin_first per_second)" "$(val checkin_first p50_ms)" "$(val checkin_first p99_ms)" ""
r=$(val checkin_304 per_second); p=$(val checkin_304 p99_ms)
printf '%-46s %14s %10s %10s %14s\n' "conditional check-in, 304 ($(val checkin_304 errors) not 304)" "$r" "$(val checkin_304 p50_ms)" "$p" ">= 20000: $(meets "$r" 20000 '>=')"
printf '%-46s %14s %10s %10s %14s\n' "" "" "" "" "p99 < 50: $(meets "$p" 50 '<')"
r=$(val report per_second); p=$(val report p99_ms)
printf '%-46s %14s %10s %10s %14s\n' "report batch, 2 events ($(val report errors) errors)" "$r" "$(val report p50_ms)" "$p" ">= 5000: $(meets "$r" 5000 '>=')"
printf '%-46s %14s %10s %10s %14s\n' "" "" "" "" "p99 < 50: $(meets "$p" 50 '<')"
printf '\n%-46s %14s %10s\n' "event streams held" "streams" "KiB each"
printf '%-46s %14s %10s\n' "imaged RSS $(val streams rss_before_kib) -> $(val streams rss_after_kib) KiB" "$(val streams ok)" "$(val streams kib_per_stream)"
s=$(val compliance seconds)
printf '\n%-46s %14s %10s %14s\n' "compliance bench/stable" "endpoints" "seconds" "goal"
printf '%-46s %14s %10s %14s\n' "$(val compliance on) on, $(val compliance counts)" "$(val compliance total)" "$s" "< 1: $(meets "$s" 1 '<')"
echo "imaged resident memory at the end: $((rss_end / 1024)) MiB"

# The emergency plan with real agents (tests/src/bin/rollout-bench.rs): AGENTS real `imgfs agent`s,
# each probing its mount; the time from `rollout start` to every endpoint healthy on the new
# generation, against the plan's own soak times. AGENTS=0 skips it.
AGENTS=${AGENTS:-50}
if (( AGENTS > 0 )); then
  kill "$IMAGED_PID" 2>/dev/null; wait "$IMAGED_PID" 2>/dev/null || true; IMAGED_PID=
  "$BIN/rollout-bench" --agents "$AGENTS" | tee "$W/agents.txt"
  ev() { awk -v k="$1" '$1 == "RESULT" && $2 == "phase=emergency" { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$W/agents.txt"; }
  over=$(ev over_soaks_s)
  printf '\n%-46s %10s %10s %10s %10s %14s\n' "emergency rollout, $AGENTS real agents" "soaks s" "switched s" "healthy s" "over s" "goal"
  printf '%-46s %10s %10s %10s %10s %14s\n' "rollout start -> every endpoint ..." "$(ev soak_seconds)" "$(ev all_switched_s)" "$(ev all_healthy_s)" "$over" "<= 10: $(meets "$over" 10.001 '<')"
  echo "(completed $(ev completed_s) s after the start: the last stage passes once 90% are healthy)"
fi
