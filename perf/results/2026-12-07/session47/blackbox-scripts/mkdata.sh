#!/bin/bash
# builds the test tree at $1/tree
set -e
D=$1/tree
rm -rf $D; mkdir -p $D/sub/deep/er "$D/ünï" $D/sp
: > $D/empty0
head -c 1 /dev/urandom > $D/one1
head -c 4095 /dev/urandom > $D/sub/f4095
head -c 4096 /dev/urandom > $D/sub/f4096
head -c 4097 /dev/urandom > $D/sub/f4097
head -c $((524288-1)) /dev/urandom > $D/sub/deep/p511
head -c 524288 /dev/urandom > $D/sub/deep/p512
head -c $((524288+1)) /dev/urandom > $D/sub/deep/er/p513
head -c $((5*1048576+123)) /dev/urandom > $D/big5m
head -c $((3*1048576)) /dev/urandom > "$D/ünï/日本語ファイル.bin"
head -c 1000 /dev/urandom > "$D/sp/with space.txt"
head -c 777 /dev/urandom > "$D/ünï/café.txt"
: > $D/sub/deep/empty_in_sub
