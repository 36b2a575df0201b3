#!/bin/bash
# Before/after of the crowd policies of 2026-12-02 (ninth session), seeds 1-3.
# BASE: ringshare-sim of 7f67dc3; NEW: this build, with --sharers-only (the
# tracker lists only hosts holding a piece) and by default (fetchers listed).
BASE=${BASE:-/tmp/base-target/release/ringshare-sim}
NEW=${NEW:-../../../../target/release/ringshare-sim}
for seed in 1 2 3; do
  for v in base sharers-only new; do
    case $v in base) b=$BASE; f=();; sharers-only) b=$NEW; f=(--sharers-only);; new) b=$NEW; f=();; esac
    echo "== $v seed $seed"
    $b --scenario flash-6,flash-100 --size-mib 64 --seed $seed "${f[@]}" | tail -2
    $b --scenario flash-12 --size-mib 32 --mbit 50 --seed $seed "${f[@]}" | tail -1
  done
done
