#!/bin/bash
cd /tmp/h44b
echo "=== old seeder uring, flood 3 addrs x 128 reconnect at once, 4 gets max 20s"
GT=20 bash scripts/t4x.sh old-uu3 /tmp/h44b/bin-old 32070 32570 uring uring 0 4
echo "=== old seeder threads, flood 3 addrs x 128 reconnect at once, 4 gets max 20s"
GT=20 bash scripts/t4x.sh old-tt3 /tmp/h44b/bin-old 32071 32571 threads threads 0 4
echo "=== mem new 60 links 600kB/s"; bash scripts/t5.sh new60 /tmp/h44b/bin-new 32072 60 8 600000 45
echo Q7DONE $(date +%T)
