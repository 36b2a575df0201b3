#!/usr/bin/env python3
"""Writes the loopback scripts' small tree: N files of 4-256 KiB (random
bytes, sizes from a fixed seed, so every run's tree has the same shape)
under ROOT, in 50 directories of 7 each.

Usage: small_tree.py ROOT N
"""
import os
import random
import sys


def make(root, n):
    rng = random.Random(7)
    for i in range(n):
        d = f"{root}/d{i % 50:02d}/e{i % 7}"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/f{i:06d}.bin", "wb") as f:
            f.write(os.urandom(rng.randint(4 << 10, 256 << 10)))


if __name__ == "__main__":
    make(sys.argv[1], int(sys.argv[2]))
