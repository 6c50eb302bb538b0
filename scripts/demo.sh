#!/usr/bin/env bash
# The demo on embedded defaults: build, import a small OS-like tree as generation 1, patch it
# into generation 2 with `imgctl patch` (in a sandbox, with a change record), start imaged,
# push, mount the channel with imgfs and run a program from it, publish generation 2 and switch
# the mount, roll back, put a promotion gate on the stable channel (a signed test, two
# approvals), enroll two endpoints running `imgfs agent` in a group, roll generation 2 out in
# two stages (the pilot's probe fails: the brake halts it; fixed and resumed, it completes),
# roll back, read the audit log, compare, export, verify. Needs
# root (FUSE, the patch sandbox).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace --bins --locked
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
IMGCTL=$BIN/imgctl
WORK=$(mktemp -d /tmp/imaged-demo.XXXXXX)
export IMGCTL_STORE=$WORK/store
unset IMAGED_SERVER IMAGED_TOKEN   # the demo starts its own server
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build a small root tree from this machine's files"
mkdir -p "$WORK/root/usr/bin" "$WORK/root/etc" "$WORK/root/var/lib/dpkg"
cp -a /bin/sh /usr/bin/env /usr/bin/ls "$WORK/root/usr/bin/"
cp -a /etc/os-release /etc/passwd "$WORK/root/etc/"
printf 'Package: demo-tool\nStatus: install ok installed\nVersion: 1.0\n\n' >"$WORK/root/var/lib/dpkg/status"
echo "tree: $(find "$WORK/root" | wc -l) entries"

step "import generation 1"
"$IMGCTL" import "$WORK/root" --image demo -m "initial image"

step "patch once, in a sandbox over generation 1: upgrade demo-tool, add a config file -> generation 2"
# The tree has no working shell (its usr/bin/sh is a copy of Debian's /bin/sh, a link to dash,
# which the tree lacks), so the commands run with the host's tools, in the image's root: hence
# the relative paths. An image with a shell gets a chroot (apt-get install works there).
"$IMGCTL" patch demo@1 --network none -m "patch: demo-tool 1.1" \
  --reason "demo-tool 1.1 fixes CVE-2026-0001" --advisory CVE-2026-0001 --requested-by "demo engineer" \
  --run "printf 'Package: demo-tool\nStatus: install ok installed\nVersion: 1.1\n\nPackage: new-lib\nStatus: install ok installed\nVersion: 0.3\n\n' > var/lib/dpkg/status" \
  --run "echo patched=yes > etc/demo.conf"
"$IMGCTL" show demo@2
echo "generations still carrying demo-tool below 1.1:"
"$IMGCTL" affected --package demo-tool --below 1.1

step "start imaged on embedded defaults (a temporary data dir, 127.0.0.1, a free port)"
"$BIN/imaged" serve --data "$WORK/server" --listen 127.0.0.1:0 2>"$WORK/imaged.log" &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$WORK/imaged.log" 2>/dev/null && break; sleep 0.1; done
export IMAGED_SERVER=$(sed -n 's/.*imaged listening on //p' "$WORK/imaged.log")
export IMAGED_TOKEN=$(cat "$WORK/server/admin.token")
echo "server $IMAGED_SERVER, token from $WORK/server/admin.token"

step "offline keys (kept by the engineers, never on the server) and the signed repository"
"$IMGCTL" key generate "$WORK/keys-root.key"
"$IMGCTL" key generate "$WORK/keys-targets.key"
"$IMGCTL" key generate "$WORK/keys-demo.key"
"$IMGCTL" trust init --root-key "$WORK/keys-root.key" --targets-key "$WORK/keys-targets.key" \
  --image "demo=$WORK/keys-demo.key.pub" --out "$WORK/root.json"
"$IMGCTL" key list
export IMGCTL_KEY=$WORK/keys-demo.key

step "push generation 1 (signed with the family's key) and point the pilot and stable channels at it"
"$IMGCTL" push demo@1
"$IMGCTL" channel set demo/pilot demo@1
"$IMGCTL" channel promote demo/pilot demo/stable

step "mount the pilot channel with imgfs (data fetched on first read, verified, cached) and run a program from it"
MNT=$WORK/mnt
mkdir -p "$MNT"
"$BIN/imgfs" mount --server "$IMAGED_SERVER" --channel demo/pilot --cache "$WORK/cache" --root "$WORK/root.json" "$MNT" 2>"$WORK/imgfs.log" &
IMGFS_PID=$!
trap 'umount -l "$MNT" 2>/dev/null || true; kill $IMGFS_PID $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "mounted" "$WORK/imgfs.log" 2>/dev/null && break; sleep 0.1; done
grep "mounted" "$WORK/imgfs.log"
"$MNT/usr/bin/ls" -l "$MNT/etc"
grep Version "$MNT/var/lib/dpkg/status"

step "push the patched generation 2 (only what changed travels) to pilot; the mount switches"
"$IMGCTL" push demo@2
"$IMGCTL" channel set demo/pilot demo@2
"$BIN/imgfs" update "$MNT"
cat "$MNT/etc/demo.conf"
grep Version "$MNT/var/lib/dpkg/status"

step "roll the mount back to generation 1 at once (no network needed), then forward again"
"$BIN/imgfs" rollback "$MNT"
ls "$MNT/etc"
"$BIN/imgfs" rollback "$MNT" >/dev/null
"$BIN/imgfs" status "$MNT"

step "a channel cannot name an unsigned generation"
"$IMGCTL" patch demo@2 --network none -q -m "unsigned experiment" --run "echo experiment > etc/experiment" >/dev/null
env -u IMGCTL_KEY "$IMGCTL" push demo@3
if "$IMGCTL" channel set demo/pilot demo@3; then echo "demo: an unsigned generation was accepted" >&2; exit 1; fi
"$BIN/imgfs" umount "$MNT"
wait $IMGFS_PID || true

step "a promotion gate on stable: a passing boot test by the CI key and two approvals"
"$IMGCTL" key generate "$WORK/keys-ci.key"
"$IMGCTL" key generate "$WORK/keys-alice.key"
"$IMGCTL" key generate "$WORK/keys-bob.key"
"$IMGCTL" channel policy demo/stable --require-test boot --require-approvals 2 \
  --approver "$WORK/keys-alice.key.pub" --approver "$WORK/keys-bob.key.pub" --tester "$WORK/keys-ci.key.pub"
rc=0; "$IMGCTL" channel promote demo/pilot demo/stable || rc=$?
[[ $rc == 6 ]] || { echo "demo: the gate should have refused demo@2 (exit 6), got exit $rc" >&2; exit 1; }
echo "refused as expected: demo@2 has no test and no approvals yet"

step "test generation 2 in the sandbox (signed evidence on the server), approve it twice"
"$IMGCTL" test demo@2 --name boot --run 'grep -q patched=yes etc/demo.conf' --key "$WORK/keys-ci.key"
"$IMGCTL" approve demo@2 --key "$WORK/keys-alice.key" --comment "diff reviewed"
"$IMGCTL" approve demo@2 --key "$WORK/keys-bob.key"
"$IMGCTL" show demo@2   # IMAGED_SERVER is set: evidence, approvals and the gate per channel

step "the fleet: an enrollment token, a group whose namespace mounts demo/stable, two endpoints running imgfs agent"
TOKEN=$("$IMGCTL" fleet token create --uses 2 --lifetime 1h --label site=demo | tail -1)
printf '[[mount]]\npath = "/demo"\nchannel = "demo/stable"\n' >"$WORK/namespace.toml"
"$IMGCTL" group create demo-site --selector site=demo --namespace "$WORK/namespace.toml"
AGENT_PIDS=()
for i in 1 2; do
  A=$WORK/endpoint$i
  mkdir -p "$A"
  [[ $i == 1 ]] && echo broken >"$A/broken"   # endpoint 1, the pilot, will fail its probe
  cat >"$A/agent.toml" <<TOML
servers = ["$IMAGED_SERVER"]
state = "$A/state"
cache = "$A/cache"
root = "$WORK/root.json"
mount_prefix = "$A/mnt"   # two endpoints on one machine: each mounts under its own directory
enroll_token = "$TOKEN"
[health]   # healthy unless a file named broken sits in the endpoint's directory while it runs generation 2
command = 'if grep -q patched=yes "\$IMGFS_MOUNT/etc/demo.conf" 2>/dev/null && [ -e $A/broken ]; then echo "demo.conf breaks this kiosk"; exit 1; fi'
timeout_seconds = 10
TOML
  "$BIN/imgfs" agent --config "$A/agent.toml" 2>"$A/agent.log" &
  AGENT_PIDS+=($!)
done
trap 'kill "${AGENT_PIDS[@]}" $SERVER_PID 2>/dev/null || true; umount -l "$WORK"/endpoint*/mnt/demo 2>/dev/null || true' EXIT
wait_for() { for _ in $(seq 300); do eval "$1" && return 0; sleep 0.1; done; echo "demo: timed out waiting for: $1" >&2; exit 1; }
wait_for '[[ -f $WORK/endpoint1/mnt/demo/usr/bin/ls && -f $WORK/endpoint2/mnt/demo/usr/bin/ls ]]'
sleep 1   # their first reports
"$IMGCTL" fleet ls
"$IMGCTL" fleet compliance demo/stable

step "a two-stage rollout of generation 2 to stable (the gate is met now): the pilot's probe fails, the brake halts it, the pilot rolls itself back"
PILOT=$(sed -n 's/.*"endpoint": *"\(ep-[0-9a-f]*\)".*/\1/p' "$WORK/endpoint1/state/endpoint.json")
"$IMGCTL" fleet label "$PILOT" ring=pilot
"$IMGCTL" group create pilot --selector ring=pilot
cat >"$WORK/plan.toml" <<'TOML'
name = "pilot-then-all"
[[stage]]
group = "pilot"
min_sample = 1
soak_seconds = 2
[[stage]]
percent = 100
min_sample = 1
soak_seconds = 2
TOML
ROLLOUT=$("$IMGCTL" --json rollout start demo/stable demo@2 --plan "$WORK/plan.toml" --reason "point release" | grep -o '"id": *"r[0-9]*"' | head -1 | grep -o 'r[0-9]*')
wait_for '"$IMGCTL" --json rollout status $ROLLOUT | grep -q "\"state\":\"halted\""'
"$IMGCTL" rollout status "$ROLLOUT"
"$IMGCTL" fleet compliance demo@2

step "fix the pilot and resume: the rollout completes, the channel names generation 2, both endpoints run it"
rm "$WORK/endpoint1/broken"
"$IMGCTL" rollout resume "$ROLLOUT"
wait_for '"$IMGCTL" --json rollout status $ROLLOUT | grep -q "\"state\":\"completed\""'
wait_for 'grep -q patched=yes "$WORK"/endpoint1/mnt/demo/etc/demo.conf 2>/dev/null && grep -q patched=yes "$WORK"/endpoint2/mnt/demo/etc/demo.conf 2>/dev/null'
sleep 2
"$IMGCTL" rollout status "$ROLLOUT"
"$IMGCTL" fleet compliance demo/stable
"$IMGCTL" fleet show "$PILOT"

step "roll stable back (rollbacks are not gated): a new channel version naming generation 1; the endpoints follow"
"$IMGCTL" channel rollback demo/stable --reason "demo of a rollback"
"$IMGCTL" channel history demo/stable
wait_for '[[ ! -e $WORK/endpoint1/mnt/demo/etc/demo.conf && ! -e $WORK/endpoint2/mnt/demo/etc/demo.conf ]]'
sleep 1
"$IMGCTL" fleet compliance demo/stable

step "the audit log: every change with its actor, hash-chained"
"$IMGCTL" audit --since "$(date -u +%Y-%m-%d)" >"$WORK/audit.txt"; tail -12 "$WORK/audit.txt"

step "retention: what garbage collection would delete (nothing: every generation is recent, named by a channel or the newest)"
"$BIN/imaged" gc --dry-run --data "$WORK/server" --listen "${IMAGED_SERVER#http://}"
curl -sf "$IMAGED_SERVER/metrics" | grep -E '^imaged_(publishes|channel_moves)_total' || true

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
