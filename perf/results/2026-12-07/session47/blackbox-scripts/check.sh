#!/bin/bash
# check.sh DEST : compare DEST/tree with data tree (minus skipped space file)
DEST=$1; SRC=/tmp/bb47/data/tree
bad=0
( cd $SRC && find . -type f ! -name 'with space.txt' ) | while read -r f; do
  if ! cmp -s "$SRC/$f" "$DEST/tree/$f"; then echo "MISMATCH/MISSING: $f"; fi
done
extra=$(cd $DEST && find . \( -name '*.part' -o -name '*.part.state' -o -name '*.tmp' \) )
[ -n "$extra" ] && echo "STRAY: $extra"
n=$(find $DEST/tree -type f 2>/dev/null | wc -l); echo "files in dest: $n (expect 12)"
