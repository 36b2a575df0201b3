#!/bin/bash
# Fourteenth session (#16): a bulk get's per-file costs. ab.txt: the build
# before this session (A) against the settler and reused control threads
# (B, commits b0c413c..3c121d8), alternating, 10,000 files of 4-256 KiB;
# loopback.txt: the three trees with every change of the session.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
HERE=perf/results/2026-12-03/bulk-settle
# A and B: directories holding each build's ringshare and ringshare-tracker.
FILES=10000 OUT=$HERE/ab.txt perf/bulk_ab.sh "${A:?}" "${B:?}" 4
SAMPLE=0 ONE=1024 OUT=$HERE/loopback.txt perf/bulk.sh 3
