#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a given time each.
#   fuzz/run.sh [SECONDS] [TARGET...]      default: 600 s, every target
# Installs cargo-fuzz when missing. Builds with the stable toolchain
# (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its flags; no sanitizer runtime is
# needed: --sanitizer none, debug assertions and overflow checks stay on).
# The corpus lives in fuzz/corpus/<target>/ and is kept in the repository
# (minimised); crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(wire_frame tracker_messages peer_session oplog_record shell_parse ticket_verify download_core secure_handshake)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t for ${secs}s"
  cargo fuzz run --sanitizer none -a "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536
  cargo fuzz cmin --sanitizer none -a "$t" "corpus/$t" >/dev/null 2>&1 || true
done
