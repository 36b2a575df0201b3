#!/bin/bash
# Twelfth session: the simulator's senders share their uplinks max-min
# (a flow its receiver limits leaves its sender's unused share to the
# sender's other flows) against the equal split before (--equal-split),
# same binary, seeds 1-3, then flash-1000. Columns as ringshare-sim prints
# them (last completion over the bound in the sixth).
SIM=${SIM:-../../../../target/release/ringshare-sim}
for seed in 1 2 3; do
  for m in equal-split max-min; do
    flag=(); [ $m = equal-split ] && flag=(--equal-split)
    echo "== $m seed $seed"
    $SIM --scenario flash-6,flash-100 --size-mib 64 --seed $seed "${flag[@]}" | tail -2
    $SIM --scenario flash-12 --size-mib 32 --mbit 50 --seed $seed "${flag[@]}" | tail -1
    $SIM --scenario hetero,churn,late,corrupt --size-mib 64 --peers 50 --seed $seed "${flag[@]}" | tail -4
  done
done
for m in equal-split max-min; do
  flag=(); [ $m = equal-split ] && flag=(--equal-split)
  echo "== $m flash-1000"
  $SIM --scenario flash-1000 --size-mib 8 "${flag[@]}" | tail -1
  /usr/bin/time -f "cpu %U s" $SIM --scenario flash-1000 --size-mib 64 "${flag[@]}" 2>&1 | tail -2
done
