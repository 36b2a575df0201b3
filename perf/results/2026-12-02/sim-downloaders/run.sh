#!/bin/bash
# Twelfth session: a host serves a file to at most 96 downloaders at once
# (serve::MAX_DOWNLOADERS; the next is refused as busy) against no cap
# (--unlimited-downloaders), same binary, seeds 1-3, then flash-1000.
# Columns as ringshare-sim prints them (last completion over the bound in
# the sixth).
SIM=${SIM:-../../../../target/release/ringshare-sim}
for seed in 1 2 3; do
  for m in unlimited capped; do
    flag=(); [ $m = unlimited ] && flag=(--unlimited-downloaders)
    echo "== $m seed $seed"
    $SIM --scenario flash-6,flash-100 --size-mib 64 --seed $seed "${flag[@]}" | tail -2
    $SIM --scenario flash-12 --size-mib 32 --mbit 50 --seed $seed "${flag[@]}" | tail -1
    $SIM --scenario hetero,churn,late,corrupt --size-mib 64 --peers 50 --seed $seed "${flag[@]}" | tail -4
  done
done
for m in unlimited capped; do
  flag=(); [ $m = unlimited ] && flag=(--unlimited-downloaders)
  echo "== $m flash-1000"
  $SIM --scenario flash-1000 --size-mib 8 "${flag[@]}" | tail -1
  /usr/bin/time -f "cpu %U s" $SIM --scenario flash-1000 --size-mib 64 "${flag[@]}" 2>&1 | tail -2
done
