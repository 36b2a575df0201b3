#!/bin/bash
cd /tmp/h44b
while ! grep -q Q5DONE q5-results.txt; do sleep 2; done
echo "=== new seeder uring, flood 2 addrs x 128 reconnect at once, 4 gets max 20s"
GT=20 bash scripts/t4x.sh new-uu2 /tmp/h44b/bin-new 32060 32560 uring uring 0 4 2 128
echo "=== new seeder threads, flood 2 addrs x 128 reconnect at once, 4 gets max 20s"
GT=20 bash scripts/t4x.sh new-tt2 /tmp/h44b/bin-new 32061 32561 threads threads 0 4 2 128
echo Q6DONE $(date +%T)
