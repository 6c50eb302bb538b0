# Sourced by bench scripts: imports gen1, gen2 (image debian) and the rust tree (image rust)
# into $W/img, starts imaged on a free port of 127.0.0.1 with its data in $W/srv, signs
# (root, targets and one image key under $W) and pushes debian@1, debian@2 and rust@1.
# Needs BIN, D and W; sets IMAGED_PID, URL, IMAGED_SERVER, IMAGED_TOKEN, IMGCTL_KEY and
# writes $W/root.json, which endpoints start from.
"$BIN/imgctl" --store "$W/img" import "$D/gen1" --image debian >/dev/null 2>&1
"$BIN/imgctl" --store "$W/img" import "$D/gen2" --image debian >/dev/null 2>&1
"$BIN/imgctl" --store "$W/img" import "$D/rust" --image rust >/dev/null 2>&1
"$BIN/imaged" serve --data "$W/srv" --listen 127.0.0.1:0 2>"$W/imaged.log" &
IMAGED_PID=$!
for _ in $(seq 300); do grep -q "listening on" "$W/imaged.log" && break; sleep 0.1; done
URL=$(sed -n 's/.*imaged listening on //p' "$W/imaged.log" | head -1)
export IMAGED_SERVER=$URL IMAGED_TOKEN=$(cat "$W/srv/admin.token")
# Signed, as every deployment is: endpoints verify the channel and the generation's signature.
for k in root targets images; do "$BIN/imgctl" key generate "$W/$k.key" >/dev/null; done
"$BIN/imgctl" --store "$W/img" trust init --root-key "$W/root.key" --targets-key "$W/targets.key" \
  --image "debian=$W/images.key.pub" --image "rust=$W/images.key.pub" --out "$W/root.json" >/dev/null
export IMGCTL_KEY=$W/images.key
for g in debian@1 debian@2 rust@1; do "$BIN/imgctl" --store "$W/img" push "$g" >/dev/null; done
