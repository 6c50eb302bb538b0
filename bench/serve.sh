#!/usr/bin/env bash
# Serving benchmark: imaged vs nginx on 127.0.0.1, with wrk, on gen1's objects, in one run.
#   1. small-object GET throughput: imaged vs nginx serving the same framed objects as files;
#   2. fetching every object of gen1: one batch request vs one GET per object (curl, keep-alive);
#   3. conditional channel polls answered 304, per second.
# Prints one table; not a timed test. Needs the datasets (make-datasets.sh).
#   DURATION=10 CONNECTIONS=64 bench/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
D=${IMAGED_DATASETS:-/var/tmp/imgbench}
[[ -e $D/.gen1.done ]] || { echo "dataset gen1 missing in $D: run ../shared/datasets/make-datasets.sh" >&2; exit 1; }
need=(); for c in wrk:wrk nginx:nginx-light curl:curl bc:bc; do command -v "${c%%:*}" >/dev/null || need+=("${c#*:}"); done
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -p tools -p imaged --locked -q
BIN=${CARGO_TARGET_DIR:-target}/release
DURATION=${DURATION:-10}
CONNS=${CONNECTIONS:-64}
W=$(mktemp -d /var/tmp/imaged-serve.XXXXXX); chmod 755 "$W"   # nginx workers run as www-data
cleanup() { [[ -n ${IMAGED_PID:-} ]] && kill "$IMAGED_PID" 2>/dev/null; [[ -f $W/nginx.pid ]] && kill "$(cat "$W/nginx.pid")" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
now() { date +%s.%N; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
rps() { awk '/Requests\/sec/ {printf "%.0f", $2}'; }

"$BIN/imgctl" --store "$W/img" import "$D/gen1" --image gen >/dev/null 2>&1
"$BIN/imaged" serve --data "$W/srv" --listen 127.0.0.1:0 2>"$W/imaged.log" &
IMAGED_PID=$!
for _ in $(seq 300); do grep -q "listening on" "$W/imaged.log" && break; sleep 0.1; done
URL=$(sed -n 's/.*imaged listening on //p' "$W/imaged.log" | head -1)
[[ -n $URL ]] || { cat "$W/imaged.log" >&2; exit 1; }
export IMAGED_SERVER=$URL IMAGED_TOKEN=$(cat "$W/srv/admin.token")
"$BIN/imgctl" --store "$W/img" push gen@1 >/dev/null
"$BIN/imgctl" --store "$W/img" channel set os/stable gen@1 >/dev/null

# The same framed objects as static files for nginx, fetched from imaged itself.
"$BIN/imgctl" --store "$W/img" objects gen@1 >"$W/objects.txt"
n_all=$(wc -l <"$W/objects.txt")
awk '$2 <= 16384 && n < 5000 {print $1; n++}' "$W/objects.txt" >"$W/small.txt"
n_small=$(wc -l <"$W/small.txt")
mkdir -p "$W/www/v1/objects"
awk -v u="$URL" -v w="$W/www/v1/objects" '{print "url = " u "/v1/objects/" $1 "\noutput = " w "/" $1}' "$W/small.txt" >"$W/small.curl"
curl -sS --no-progress-meter --fail --parallel --parallel-max 8 -K "$W/small.curl"
sed 's|^|/v1/objects/|' "$W/small.txt" >"$W/paths.txt"
NGINX_PORT=$(free_port)
NGINX_QUIET=$(free_port)
cat >"$W/nginx.conf" <<NGX
worker_processes auto;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 4096; }
http {
  access_log $W/nginx.access;
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
  server { listen 127.0.0.1:$NGINX_PORT; root $W/www;
    location /v1/objects/ { add_header Cache-Control "public, max-age=31536000, immutable"; } }
  server { listen 127.0.0.1:$NGINX_QUIET; root $W/www; access_log off;
    location /v1/objects/ { add_header Cache-Control "public, max-age=31536000, immutable"; } }
}
NGX
nginx -c "$W/nginx.conf" -p "$W"
sleep 0.5
cat >"$W/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA
curl -sf "http://127.0.0.1:$NGINX_PORT$(head -1 "$W/paths.txt")" | cmp -s - "$W/www$(head -1 "$W/paths.txt")" || { echo "nginx is not serving the objects" >&2; exit 1; }

echo "== gen1: $n_all objects ($n_small small ones, <= 16 KiB stored, in the GET test); $(nproc) cores; $(uname -r); wrk -t2 -c$CONNS -d${DURATION}s"
export WRK_PATHS=$W/paths.txt
wrk -t2 -c"$CONNS" -d1s -s "$W/paths.lua" "$URL" >/dev/null    # warm both
wrk -t2 -c"$CONNS" -d1s -s "$W/paths.lua" "http://127.0.0.1:$NGINX_PORT" >/dev/null
r_img=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$W/paths.lua" "$URL" | tee "$W/wrk-img.txt" | rps)
r_ngx=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$W/paths.lua" "http://127.0.0.1:$NGINX_PORT" | tee "$W/wrk-ngx.txt" | rps)
r_ngq=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$W/paths.lua" "http://127.0.0.1:$NGINX_QUIET" | tee "$W/wrk-ngq.txt" | rps)
if grep -q "Non-2xx" "$W/wrk-img.txt" "$W/wrk-ngx.txt"; then echo "errors during the GET test:" >&2; cat "$W"/wrk-*.txt >&2; exit 1; fi
printf '\n%-48s %12s %10s\n' "small-object GET" "requests/s" "imaged/x"
printf '%-48s %12s %10s\n' "imaged (reads logged at debug: not written)" "$r_img" "1.00"
printf '%-48s %12s %10s\n' "nginx (static files, sendfile, access log)" "$r_ngx" "$(ratio "$r_img" "$r_ngx")"
printf '%-48s %12s %10s\n' "nginx (static files, sendfile, no access log)" "$r_ngq" "$(ratio "$r_img" "$r_ngq")"

# Every object of gen1: one batch request vs one GET each over 8 keep-alive connections.
awk '{print $1}' "$W/objects.txt" | python3 -c 'import json,sys; print(json.dumps({"digests": sys.stdin.read().split()}))' >"$W/all.json" 2>/dev/null \
  || { printf '{"digests":['; awk '{printf "%s\"%s\"", (NR>1?",":""), $1}' "$W/objects.txt"; printf ']}'; } >"$W/all.json"
t0=$(now)
bytes_batch=$(curl -sS --fail -X POST -H 'content-type: application/json' --data-binary @"$W/all.json" "$URL/v1/objects/batch" -o "$W/batch.out" -w '%{size_download}')
t_batch=$(echo "$(now) - $t0" | bc -l)
awk -v u="$URL" '{print "url = " u "/v1/objects/" $1 "\noutput = /dev/null"}' "$W/objects.txt" >"$W/all.curl"
t0=$(now)
curl -sS --no-progress-meter --fail --parallel --parallel-max 8 -K "$W/all.curl"
t_each=$(echo "$(now) - $t0" | bc -l)
printf '\n%-48s %12s %10s %12s\n' "fetch all $n_all objects of gen1" "requests" "seconds" "batch/x"
printf '%-48s %12s %10.2f %12s\n' "one batch request ($((bytes_batch / 1048576)) MiB)" 1 "$t_batch" "1.00"
printf '%-48s %12s %10.2f %12s\n' "one GET per object (curl, 8 in parallel)" "$n_all" "$t_each" "$(ratio "$t_batch" "$t_each")"

# Conditional channel polls: every answer should be 304 (checked in imaged's metrics).
before=$(curl -sf "$URL/metrics" | awk '/imaged_http_requests_total\{.*channels.*status="304"/ {s+=$2} END {print s+0}')
r_poll=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -H 'If-None-Match: "v1"' "$URL/v1/channels/os/stable" | tee "$W/wrk-poll.txt" | rps)
after=$(curl -sf "$URL/metrics" | awk '/imaged_http_requests_total\{.*channels.*status="304"/ {s+=$2} END {print s+0}')
total=$(awk '/requests in/ {print $1}' "$W/wrk-poll.txt")
printf '\n%-48s %12s %10s\n' "conditional channel polls" "requests/s" "goal"
printf '%-48s %12s %10s\n' "imaged, 304 Not Modified ($((after - before)) of $total were 304)" "$r_poll" "20000"
