#!/bin/bash
# A seed at --upload-rate RATE sharing TREE, fetched whole by one
# `ringshare get` on loopback; prints the get's bytes, seconds and rate.
# TREE=small (default): 2,000 files of 1-31 KB (29 MB); TREE=large: two
# files of 200 MiB.
# Usage: upload-rate-cap.sh BIN_DIR   (RATE, default 2MB; JOBS; TREE;
# SEED_ARGS, e.g. "--io threads")
set -euo pipefail
B=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../../../.." && pwd)
source "$ROOT/perf/lib/loopback.sh"
python3 - "$W/tree" "${TREE:-small}" <<'PY'
import os, sys
root, kind = sys.argv[1], sys.argv[2]
if kind == "large":
    os.makedirs(root, exist_ok=True)
    for i in range(2):
        with open(f"{root}/big{i}.dat", "wb") as f:
            for _ in range(200):
                f.write(os.urandom(1 << 20))
else:
    for i in range(2000):
        d = f"{root}/d{i % 20}"; os.makedirs(d, exist_ok=True)
        open(f"{d}/f{i}.dat", "wb").write(os.urandom(1000 + i * 37 % 30000))
PY
d=$W/r; mkdir -p "$d"
lb_group "$d" "$B"
lb_seed "$d" "$B" "$W/tree" --upload-rate "${RATE:-2MB}" ${SEED_ARGS:-}
j=(); [ -n "${JOBS:-}" ] && j=(--jobs "$JOBS")
RINGSHARE_STATE_DIR=$d/l "$B/ringshare" get --trackers "$d/ti.txt" --user l --password-file "$d/pw" \
  "${j[@]}" --quiet --stats "$d/st.json" g "$d/dl" >/dev/null 2>"$d/get.log" || tail -3 "$d/get.log"
python3 -c "import json;s=json.load(open('$d/st.json'));print(s['bytes'],round(s['seconds'],2),'s',round(s['mbps'],2),'MB/s','opened',s.get('peer_links_opened'),'reused',s.get('peer_links_reused'))"
