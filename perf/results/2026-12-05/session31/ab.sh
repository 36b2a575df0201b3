#!/bin/bash
# ab.sh N binA binB ... : alternates run.sh over the builds N rounds; prints MB/s and get CPU
N=$1; shift
for r in $(seq $N); do for b in "$@"; do
  out=$(/tmp/s31/run.sh /tmp/s31/$b 1 2>&1)
  mbps=$(echo "$out" | awk '/^run/{print $6}'); cpu=$(echo "$out" | awk '/^get user/{print $3+$5}')
  seed=$(echo "$out" | awk '/seeder cpu/{print $NF}')
  echo "$b $mbps getcpu $cpu seedcpu $seed"
done; done
