#!/bin/bash
# prints busy% of all CPUs every 100 ms until killed
prev=($(head -1 /proc/stat)); 
while sleep 0.1; do cur=($(head -1 /proc/stat)); 
 tot=0; for i in 1 2 3 4 5 6 7 8; do tot=$((tot + cur[i] - prev[i])); done
 idle=$(( cur[4]-prev[4] + cur[5]-prev[5] ))
 [ $tot -gt 0 ] && echo "$(date +%s.%N | cut -c7-14) busy $(( 100*(tot-idle)/tot ))% iowait $(( 100*(cur[5]-prev[5])/tot ))%"
 prev=("${cur[@]}"); done
