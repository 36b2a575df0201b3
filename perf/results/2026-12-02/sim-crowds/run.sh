#!/bin/bash
# The crowd policies of 2026-12-02 (ninth session): base (7f67dc3) against
# this build (fetchers listed, stealing, upload slots), seeds 1-3.
BASE=${BASE:-/tmp/base-target/release/ringshare-sim}
NEW=${NEW:-../../../../target/release/ringshare-sim}
for seed in 1 2 3; do
  for v in base new; do
    b=$BASE; [ $v = new ] && b=$NEW
    echo "== $v seed $seed"
    $b --scenario flash-6,flash-100 --size-mib 64 --seed $seed | tail -2
    $b --scenario flash-12 --size-mib 32 --mbit 50 --seed $seed | tail -1
    $b --scenario hetero,churn,late,corrupt --size-mib 64 --peers 50 --seed $seed | tail -4
  done
done
for v in base new; do
  b=$BASE; [ $v = new ] && b=$NEW
  echo "== $v flash-1000"
  $b --scenario flash-1000 --size-mib 8 | tail -1
done
