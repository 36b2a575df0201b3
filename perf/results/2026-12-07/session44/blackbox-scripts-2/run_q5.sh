#!/bin/bash
cd /tmp/h44b
while ! grep -q Q4DONE q4-results.txt; do sleep 2; done
echo "=== burst new silent 6"; bash scripts/t3burst.sh new-silent2 /tmp/h44b/bin-new 32042 silent 6
echo "=== burst old silent 6"; bash scripts/t3burst.sh old-silent2 /tmp/h44b/bin-old 32043 silent 6
echo Q5DONE $(date +%T)
