#!/usr/bin/env bash
# Scale-out benchmark (issue 18), first part: the read path of immutable files. Cold mount +
# `dpkg -l` of gen2 and a full read of gen2, direct from imaged and through a caching nginx
# (cold proxy cache, then a second endpoint on a warm one): time, requests the endpoint made,
# requests that reached the origin; then a mirror's initial sync and a cold endpoint through it;
# then the served store on a 3-node Garage against the local disk (push, cold reads).
# Then what the server serves: the serving packs of gen1,
# gen2 and the rust tree beside the store, and the bytes an endpoint holding gen1 fetches for
# gen2; then the same served at zstd 19, beside casync, squashfs and ostree. Prints tables; not a timed test. Needs the datasets and nginx (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${IMAGED_DATASETS:-/var/tmp/imgbench}
for s in gen1 gen2 rust; do [[ -e $D/.$s.done ]] || { echo "dataset $s missing in $D: run ../shared/datasets/make-datasets.sh" >&2; exit 1; }; done
command -v nginx >/dev/null || { echo "nginx missing: run scripts/setup.sh" >&2; exit 1; }
cargo build --release -p tools -p imaged -p fs --locked -q
BIN=${CARGO_TARGET_DIR:-target}/release
W=$(mktemp -d /var/tmp/imaged-scale.XXXXXX)
MOUNTS=()
cleanup() {
  set +e
  for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
  [[ -n ${NGINX_PID:-} ]] && kill "$NGINX_PID" 2>/dev/null
  [[ -n ${MIRROR_PID:-} ]] && kill "$MIRROR_PID" 2>/dev/null
  [[ -n ${IMAGED_PID:-} ]] && kill "$IMAGED_PID" 2>/dev/null
  for p in "$W"/*.pid; do [[ -e $p ]] && kill "$(cat "$p")" 2>/dev/null || true; done
  [[ -n ${GARAGE_PID:-} ]] && { exec 7>&-; wait "$GARAGE_PID" 2>/dev/null; }
  sleep 0.5; rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { local t0=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(now) - $t0" | bc -l | xargs printf '%.2f'; }
mib() { echo "$1 / 1048576" | bc -l | xargs printf '%.1f'; }

. bench/repository.sh
"$BIN/imgctl" --store "$W/img" channel set bench/debian debian@1 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set bench/debian2 debian@2 >/dev/null
# The serving packs and layouts are written in the background after each publish.
for m in $(curl -sf "$URL/v1/generations" | python3 -c 'import json,sys; [print(g["manifest"]) for g in json.load(sys.stdin)["generations"]]'); do
  for _ in $(seq 600); do curl -sfo /dev/null "$URL/v1/layouts/$m" && break; sleep 0.1; done
done

# nginx in front: serving packs cached in 1 MiB slices (docs/scale.md).
mkdir -p "$W/nginx/cache" "$W/nginx/tmp"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
UP=${URL#http://}
cat > "$W/nginx/nginx.conf" <<EOF
user root;
daemon off;
master_process off;
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $W/nginx/tmp/body;
    proxy_temp_path $W/nginx/tmp/proxy;
    fastcgi_temp_path $W/nginx/tmp/fastcgi;
    uwsgi_temp_path $W/nginx/tmp/uwsgi;
    scgi_temp_path $W/nginx/tmp/scgi;
    proxy_cache_path $W/nginx/cache levels=1:2 keys_zone=imaged:10m max_size=8g inactive=1d use_temp_path=off;
    server {
        listen 127.0.0.1:$PORT;
        client_max_body_size 0;
        proxy_http_version 1.1;
        location /v1/packs/ {
            slice 1m;
            proxy_cache imaged;
            proxy_cache_key \$uri\$slice_range;
            proxy_set_header Range \$slice_range;
            proxy_cache_valid 200 206 1y;
            proxy_pass http://$UP;
        }
        location / { proxy_cache imaged; proxy_pass http://$UP; }
    }
}
EOF
nginx -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" &
NGINX_PID=$!
PROXY=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -so /dev/null "$PROXY/healthz" && break; sleep 0.05; done

# Requests that reached imaged (all routes but the timestamp's and the metrics').
origin() { curl -sf "$URL/metrics" | awk '/^imaged_http_requests_total\{/ && !/metrics/ {s+=$NF} END {print s+0}'; }
mount_at() {  # mount_at NAME SERVER CHANNEL
  local name=$1 server=$2 channel=$3
  mkdir -p "$W/mnt-$name"
  "$BIN/imgfs" mount --server "$server" --channel "$channel" --cache "$W/cache-$name" --root "$W/root.json" --poll-seconds 3600 "$W/mnt-$name" >/dev/null 2>"$W/imgfs-$name.log" &
  for _ in $(seq 600); do grep -qs "mounted" "$W/imgfs-$name.log" && break; sleep 0.01; done
  MOUNTS+=("$W/mnt-$name")
}
requests() { "$BIN/imgfs" status "$W/mnt-$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["traffic"]["requests"])'; }
# run NAME SERVER: cold mount + dpkg -l, then a full read; prints one row.
run() {
  local name=$1 server=$2 o0 o1 o2 t0 t_mount t_dpkg r1 t_read r2
  o0=$(origin); t0=$(now)
  mount_at "$name" "$server" bench/debian2
  t_mount=$(echo "$(now) - $t0" | bc -l | xargs printf '%.2f')
  t_dpkg=$(secs chroot "$W/mnt-$name" /usr/bin/dpkg -l)
  r1=$(requests "$name"); o1=$(origin)
  t_read=$(secs sh -c "tar -cf - -C '$W/mnt-$name' . | cat >/dev/null")
  r2=$(requests "$name"); o2=$(origin)
  printf '%-34s %8s %8s %8s %8s %10s %8s %10s\n' "$3" "$t_mount" "$t_dpkg" "$r1" "$((o1 - o0))" "$t_read" "$r2" "$((o2 - o0))"
}
echo "== $(nproc) cores; $(uname -r)"
printf '\n%-34s %8s %8s %8s %8s %10s %8s %10s\n' "gen2, cold endpoint cache" "mount s" "dpkg s" "req" "origin" "full read" "req" "origin"
run direct "$URL" "direct to imaged"
run proxy1 "$PROXY" "nginx, cold proxy cache"
run proxy2 "$PROXY" "nginx, warm (second endpoint)"

# A mirror: its initial sync of every signed generation (gen1, gen2, the rust tree), checked
# whole, then an endpoint reading through it.
t_sync=$(secs "$BIN/imaged" mirror --from "$URL" --dir "$W/mirror" --root "$W/root.json" --once)
"$BIN/imaged" mirror --from "$URL" --dir "$W/mirror" --listen 127.0.0.1:0 --interval 3600 2>"$W/mirror.log" &
MIRROR_PID=$!
for _ in $(seq 300); do grep -q "listening on" "$W/mirror.log" && break; sleep 0.1; done
MIRROR=$(sed -n 's/.*imaged listening on //p' "$W/mirror.log" | head -1)
run mirror "$MIRROR" "through a mirror (cold endpoint)"
printf '\n%-44s %10s %10s\n' "mirror, initial sync of the 3 generations" "s" "MiB"
printf '%-44s %10s %10s\n' "" "$t_sync" "$(mib "$(du -sb --apparent-size "$W/mirror/site" | cut -f1)")"

# The served store on a real 3-node Garage cluster (replication factor 3;
# tests/src/bin/garage-cluster.rs) against the local disk: two fresh servers get the same three
# pushes (push time: until the last generation's layout is served, from the bucket for
# Garage); then a cold endpoint reads all of gen2 and all of the rust tree from each, and
# gen2 once more from Garage with imaged's read-through cache off (cache_bytes = 0).
cargo build --release -p tests --bin garage-cluster --locked -q
mkfifo "$W/garage.in"
"$BIN/garage-cluster" --dir "$W/garage" --config "$W/garage.toml" <"$W/garage.in" >"$W/garage.out" 2>"$W/garage.err" &
GARAGE_PID=$!
exec 7>"$W/garage.in"
for _ in $(seq 600); do grep -q ready "$W/garage.out" && break; sleep 0.1; done
grep -q ready "$W/garage.out" || { echo "garage did not start: $(tail -5 "$W/garage.err")" >&2; exit 1; }
serve() {  # serve DATA [CONFIG]: a fresh imaged; prints its URL (its pid in DATA.pid)
  local log="$1.log"
  "$BIN/imaged" serve ${2:+--config "$2"} --data "$1" --listen 127.0.0.1:0 >/dev/null 2>"$log" &
  echo $! >"$1.pid"
  for _ in $(seq 300); do grep -q "listening on" "$log" && break; sleep 0.1; done
  sed -n 's/.*imaged listening on //p' "$log" | head -1
}
stop() { kill "$(cat "$1.pid")" 2>/dev/null; while kill -0 "$(cat "$1.pid")" 2>/dev/null; do sleep 0.1; done; }
push_all() {  # push_all URL DATA: trust, then the timed pushes; prints seconds
  local url=$1 data=$2 t0 m
  export IMAGED_SERVER=$url IMAGED_TOKEN=$(cat "$data/admin.token")
  "$BIN/imgctl" --store "$W/img" trust init --root-key "$W/root.key" --targets-key "$W/targets.key" \
    --image "debian=$W/images.key.pub" --image "rust=$W/images.key.pub" --out "$data.root.json" >/dev/null
  t0=$(now)
  for g in debian@1 debian@2 rust@1; do "$BIN/imgctl" --store "$W/img" push "$g" >/dev/null; done
  "$BIN/imgctl" --store "$W/img" channel set bench/debian2 debian@2 >/dev/null
  "$BIN/imgctl" --store "$W/img" channel set bench/rust rust@1 >/dev/null
  for m in $(curl -sf "$url/v1/generations" | python3 -c 'import json,sys; [print(g["manifest"]) for g in json.load(sys.stdin)["generations"]]'); do
    for _ in $(seq 36000); do curl -sfo /dev/null "$url/v1/layouts/$m" && break; sleep 0.05; done
  done
  echo "$(now) - $t0" | bc -l | xargs printf '%.2f'
}
cold_read() {  # cold_read NAME URL ROOT CHANNEL: a fresh endpoint reads the whole tree; prints seconds
  mkdir -p "$W/mnt-$1"
  "$BIN/imgfs" mount --server "$2" --channel "$4" --cache "$W/cache-$1" --root "$3" --poll-seconds 3600 "$W/mnt-$1" >/dev/null 2>"$W/imgfs-$1.log" &
  for _ in $(seq 600); do grep -qs "mounted" "$W/imgfs-$1.log" && break; sleep 0.01; done
  MOUNTS+=("$W/mnt-$1")
  secs sh -c "tar -cf - -C '$W/mnt-$1' . | cat >/dev/null"
  umount "$W/mnt-$1"
}
LOCAL=$(serve "$W/local")
GARAGE=$(serve "$W/onbucket" "$W/garage.toml")
push_local=$(push_all "$LOCAL" "$W/local")
push_garage=$(push_all "$GARAGE" "$W/onbucket")
read_local2=$(cold_read l2 "$LOCAL" "$W/local.root.json" bench/debian2)
read_garage2=$(cold_read g2 "$GARAGE" "$W/onbucket.root.json" bench/debian2)
read_local3=$(cold_read l3 "$LOCAL" "$W/local.root.json" bench/rust)
read_garage3=$(cold_read g3 "$GARAGE" "$W/onbucket.root.json" bench/rust)
fetched=$(curl -sf "$GARAGE/metrics" | awk '/^imaged_bucket_cache_fetches_total/ {print $NF}')
stop "$W/onbucket"
echo 'cache_bytes = 0' >>"$W/garage.toml"
GARAGE=$(serve "$W/onbucket" "$W/garage.toml")
read_nocache2=$(cold_read n2 "$GARAGE" "$W/onbucket.root.json" bench/debian2)
stop "$W/onbucket"; stop "$W/local"
exec 7>&-; wait "$GARAGE_PID" || true; GARAGE_PID=
printf '\n%-44s %10s %10s %10s\n' "store: local disk vs Garage (3 nodes)" "push 3 s" "gen2 read" "rust read"
printf '%-44s %10s %10s %10s\n' "local disk (DATA/serve)" "$push_local" "$read_local2" "$read_local3"
printf '%-44s %10s %10s %10s\n' "Garage bucket, read-through cache" "$push_garage" "$read_garage2" "$read_garage3"
printf '%-44s %10s %10s %10s\n' "Garage bucket, cache off (cache_bytes = 0)" "" "$read_nocache2" ""
printf '%-44s %10s\n' "blocks fetched from Garage by both reads" "$fetched"

# What the server serves, against what it stores.
du_b() { du -sb --apparent-size "$@" | awk '{s+=$1} END {print s}'; }
store=$(du_b "$W/srv/store/objects" "$W/srv/store/packs")
packs=$(du_b "$W/srv/serve/packs")
layouts=$(du_b "$W/srv/serve/layouts")
printf '\n%-44s %10s\n' "server, gen1 + gen2 + rust tree" "MiB"
printf '%-44s %10s\n' "store (objects and upload packs)" "$(mib "$store")"
printf '%-44s %10s\n' "serving packs" "$(mib "$packs")"
printf '%-44s %10s\n' "layouts (all three)" "$(mib "$layouts")"
printf '%-44s %10s\n' "gen2's own serving pack (gen1 -> gen2 at most)" "$(mib "$(ls -S "$W/srv/serve/packs" | while read -r p; do stat -c %s "$W/srv/serve/packs/$p"; done | sort -n | head -1)")"

# Moving an endpoint that holds all of gen1 to gen2 (through the proxy, warm).
mount_at move "$PROXY" bench/debian
tar -cf - -C "$W/mnt-move" . | cat >/dev/null
read -r q0 b0 < <("$BIN/imgfs" status "$W/mnt-move" --json | python3 -c 'import json,sys; t=json.load(sys.stdin)["traffic"]; print(t["requests"], t["bytes"])')
"$BIN/imgctl" --store "$W/img" channel set bench/debian debian@2 >/dev/null
"$BIN/imgfs" update "$W/mnt-move" >/dev/null
tar -cf - -C "$W/mnt-move" . | cat >/dev/null
read -r q1 b1 < <("$BIN/imgfs" status "$W/mnt-move" --json | python3 -c 'import json,sys; t=json.load(sys.stdin)["traffic"]; print(t["requests"], t["bytes"])')
printf '%-44s %10s\n' "endpoint with gen1 moved to gen2, all read: MiB" "$(mib $((b1 - b0))) ($((q1 - q0)) requests)"

# Recompressed: the same repository (a copy of the data directory, the server stopped), its
# serving packs built again at zstd 19 (`serve_zstd_level`) when the copy starts.
kill "$IMAGED_PID" 2>/dev/null; wait "$IMAGED_PID" 2>/dev/null || true; IMAGED_PID=
cp -a "$W/srv" "$W/srv19"; rm -rf "$W/srv19/serve"
echo 'serve_zstd_level = 19' > "$W/srv19.toml"
t0=$(now)
"$BIN/imaged" serve --config "$W/srv19.toml" --data "$W/srv19" --listen 127.0.0.1:0 2>"$W/imaged19.log" &
IMAGED_PID=$!
for _ in $(seq 300); do grep -q "listening on" "$W/imaged19.log" && break; sleep 0.1; done
URL19=$(sed -n 's/.*imaged listening on //p' "$W/imaged19.log" | head -1)
for m in $(curl -sf "$URL19/v1/generations" | python3 -c 'import json,sys; [print(g["manifest"]) for g in json.load(sys.stdin)["generations"]]'); do
  for _ in $(seq 36000); do curl -sfo /dev/null "$URL19/v1/layouts/$m" && break; sleep 0.1; done
done
t_repack=$(echo "$(now) - $t0" | bc -l | xargs printf '%.0f')
packs19=$(du_b "$W/srv19/serve/packs")
sizes() { ls "$1" | while read -r p; do stat -c %s "$1/$p"; done | sort -n; }
IMAGED_SERVER=$URL19 "$BIN/imgctl" --store "$W/img" channel set bench/debian debian@1 >/dev/null
mount_at move19 "$URL19" bench/debian
tar -cf - -C "$W/mnt-move19" . | cat >/dev/null
read -r _ r0 < <("$BIN/imgfs" status "$W/mnt-move19" --json | python3 -c 'import json,sys; t=json.load(sys.stdin)["traffic"]; print(t["requests"], t["bytes"])')
IMAGED_SERVER=$URL19 "$BIN/imgctl" --store "$W/img" channel set bench/debian debian@2 >/dev/null
"$BIN/imgfs" update "$W/mnt-move19" >/dev/null
tar -cf - -C "$W/mnt-move19" . | cat >/dev/null
read -r _ r1 < <("$BIN/imgfs" status "$W/mnt-move19" --json | python3 -c 'import json,sys; t=json.load(sys.stdin)["traffic"]; print(t["requests"], t["bytes"])')

# The anchors on the same data: casync's chunk files, squashfs at zstd 15 and 22 with 1 MiB
# blocks, ostree's archive objects and its static delta from gen1 to gen2.
need=(); for c in casync:casync ostree:ostree mksquashfs:squashfs-tools; do command -v "${c%%:*}" >/dev/null || need+=("${c#*:}"); done
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
casync make --store="$W/casync.castr" "$W/rust.caidx" "$D/rust" >/dev/null
cas=$(find "$W/casync.castr" -name '*.cacnk' -printf '%s\n' | awk '{s+=$1} END {print s}')
mksquashfs "$D/rust" "$W/rust15.sqfs" -comp zstd -Xcompression-level 15 -b 1M -quiet -no-progress >/dev/null
mksquashfs "$D/rust" "$W/rust22.sqfs" -comp zstd -Xcompression-level 22 -b 1M -quiet -no-progress >/dev/null
ostree init --repo="$W/ostree" --mode=archive
ostree commit --repo="$W/ostree" --branch=rust --tree=dir="$D/rust" >/dev/null
ost=$(du_b "$W/ostree/objects")
echo /dev >"$W/ostree.skip"  # device nodes, which ostree refuses
ostree commit --repo="$W/ostree" --branch=debian --skip-list="$W/ostree.skip" --tree=dir="$D/gen1" >/dev/null
ostree commit --repo="$W/ostree" --branch=debian --skip-list="$W/ostree.skip" --tree=dir="$D/gen2" >/dev/null
ostree static-delta generate --repo="$W/ostree" debian >/dev/null
delta=$(du_b "$W/ostree/deltas")
# What an ostree client fetches for the delta: its parts and its fallback objects (files too
# big to delta, fetched whole as archive objects), which the deltas folder does not hold.
delta_all=$(ostree static-delta show --repo="$W/ostree" "$(ostree static-delta list --repo="$W/ostree" | head -1)" | sed -n 's/^Total Size: \([0-9]*\).*/\1/p')
printf '\n%-52s %10s\n' "rust tree, bytes served (MiB)" ""
printf '%-52s %10s\n' "imaged serving pack, objects as stored" "$(mib "$(sizes "$W/srv/serve/packs" | tail -1)")"
printf '%-52s %10s\n' "imaged serving pack, recompressed at 19" "$(mib "$(sizes "$W/srv19/serve/packs" | tail -1)")"
printf '%-52s %10s\n' "casync chunk files" "$(mib "$cas")"
printf '%-52s %10s\n' "squashfs zstd 15, 1 MiB blocks" "$(mib "$(stat -c %s "$W/rust15.sqfs")")"
printf '%-52s %10s\n' "squashfs zstd 22, 1 MiB blocks" "$(mib "$(stat -c %s "$W/rust22.sqfs")")"
printf '%-52s %10s\n' "ostree archive objects" "$(mib "$ost")"
printf '\n%-52s %10s\n' "gen1 -> gen2 (MiB)" ""
printf '%-52s %10s\n' "imaged endpoint, objects as stored" "$(mib $((b1 - b0)))"
printf '%-52s %10s\n' "imaged endpoint, recompressed at 19" "$(mib $((r1 - r0)))"
printf '%-52s %10s\n' "ostree static delta, parts only" "$(mib "$delta")"
printf '%-52s %10s\n' "ostree static delta, parts + fallback objects" "$(mib "$delta_all")"
printf '\n%-52s %10s\n' "all serving packs rebuilt at 19 (s; MiB)" "$t_repack; $(mib "$packs19")"
