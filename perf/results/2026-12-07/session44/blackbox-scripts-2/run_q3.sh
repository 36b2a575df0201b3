#!/bin/bash
cd /tmp/h44b
while ! grep -q QDONE q2-results.txt; do sleep 2; done
echo "=== burst new silent 6"; bash scripts/t3burst.sh new-silent /tmp/h44b/bin-new 32040 silent 6
echo "=== burst old silent 6"; bash scripts/t3burst.sh old-silent /tmp/h44b/bin-old 32041 silent 6
echo Q3DONE $(date +%T)
