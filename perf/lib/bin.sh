# Sourced by perf scripts (bulk.sh, bulk_cost.sh, crowd.sh) after they set
# ROOT: B is the directory holding the ringshare and ringshare-tracker to
# measure — $BIN when set (a saved build, e.g. an older commit's for an
# A/B), else this tree's release build, made first.
if [ -n "${BIN:-}" ]; then
  B=$(cd "$BIN" && pwd)
else
  cargo build --release --locked -p ringshare -p ringshare-tracker --bin ringshare --bin ringshare-tracker
  B=$ROOT/target/release
fi
