#!/bin/bash
# Upload slots under the max-min model (seeds 1-2): does a fewer-slot
# setting now fare better, as the namespace testbed's medians hinted?
SIM=${SIM:-../../../../target/release/ringshare-sim}
for slots in 16 8 4; do
  for seed in 1 2; do
    echo "== slots $slots seed $seed"
    $SIM --scenario flash-100 --size-mib 64 --seed $seed --send-slots $slots | tail -1
    $SIM --scenario flash-12 --size-mib 32 --mbit 50 --seed $seed --send-slots $slots | tail -1
    $SIM --scenario hetero,late --size-mib 64 --peers 50 --seed $seed --send-slots $slots | tail -2
  done
done
