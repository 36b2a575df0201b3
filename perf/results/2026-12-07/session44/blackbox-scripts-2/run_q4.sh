#!/bin/bash
cd /tmp/h44b
while ! grep -q Q3DONE q3-results.txt; do sleep 2; done
echo "=== new seeder threads, getter uring, reconnect flood, 5 gets of max 20s"
GT=20 bash scripts/t4x.sh new-tu /tmp/h44b/bin-new 32050 32550 threads uring 0 5
echo "=== new seeder threads, getter threads, RUST_LOG=warn, no --quiet, 3 gets of max 20s"
RUST_LOG=warn GQ= GT=20 bash scripts/t4x.sh new-tt /tmp/h44b/bin-new 32051 32551 threads threads 0 3
echo "=== new seeder uring, getter uring, reconnect flood, 5 gets of max 20s"
GT=20 bash scripts/t4x.sh new-uu /tmp/h44b/bin-new 32052 32552 uring uring 0 5
echo Q4DONE $(date +%T)
