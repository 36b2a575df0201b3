#!/bin/bash
# get.sh STATEDIR DEST PORT [opts...]
source /tmp/bb47/scripts/lib.sh
SD=$1 DEST=$2 PORT=$3; shift 3
RINGSHARE_STATE_DIR=$SD $B/ringshare get --listen 127.0.0.1:$PORT "$@" --trackers $G/ti.txt --user l --password-file $G/pw g "$DEST"
