#!/bin/bash
# Thirteenth session: seeds keep second copies back until every piece went
# out once (default) against offering and sending them early
# (--second-copies-early, how seeds did before), same binary. Columns as
# ringshare-sim prints them (last completion over the bound in the sixth,
# the seed's upload in MiB in the eighth).
SIM=${SIM:-../../../../target/release/ringshare-sim}
for seed in 1 2 3 4 5 6; do
  for m in early first; do
    flag=(); [ $m = early ] && flag=(--second-copies-early)
    echo "== $m seed $seed"
    $SIM --scenario flash-12 --size-mib 32 --mbit 50 --seed $seed "${flag[@]}" | tail -1
    $SIM --scenario flash-6,flash-100 --size-mib 64 --seed $seed "${flag[@]}" | tail -2
  done
done
for seed in 1 2 3 4 5 6 7 8; do
  for m in early first; do
    flag=(); [ $m = early ] && flag=(--second-copies-early)
    echo "== $m seed $seed"
    $SIM --scenario hetero --size-mib 64 --peers 50 --seed $seed "${flag[@]}" | tail -1
    [ $seed -le 3 ] && $SIM --scenario churn,late,corrupt --size-mib 64 --peers 50 --seed $seed "${flag[@]}" | tail -3
  done
done
for m in early first; do
  flag=(); [ $m = early ] && flag=(--second-copies-early)
  echo "== $m flash-1000"
  $SIM --scenario flash-1000 --size-mib 8 "${flag[@]}" | tail -1
  /usr/bin/time -f "cpu %U s" $SIM --scenario flash-1000 --size-mib 64 "${flag[@]}" 2>&1 | tail -2
done
