#!/bin/bash
# Tenth session: base (526807b) against this build (a request waiting for
# a busy peer's upload slot may be taken over; a seed sends the piece it
# sent least first), seeds 1-3, then flash-1000.
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
  $b --scenario flash-1000 --size-mib 64 | tail -1
done
