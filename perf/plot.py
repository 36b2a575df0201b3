#!/usr/bin/env python3
"""Plots from ringshare perf results, as SVG, with no third-party modules.

  perf/plot.py RESULTS_DIR

Reads RESULTS_DIR/*/summary.json (swarm runs) and RESULTS_DIR/*/latency-*.hgrm
and writes RESULTS_DIR/throughput.svg (median MB/s per configuration, bars)
and RESULTS_DIR/latency.svg (piece latency percentile curves, one per
configuration, log-scaled percentile axis as HdrHistogram plots do).
"""
import glob
import json
import math
import os
import sys

W, H, M = 760, 420, 60
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def svg(path, body, title):
    with open(path, "w") as f:
        f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">\n' % (W, H))
        f.write('<rect width="100%" height="100%" fill="white"/>\n')
        f.write('<text x="%d" y="24" font-size="16" text-anchor="middle">%s</text>\n' % (W // 2, title))
        f.write(body)
        f.write("</svg>\n")


def bars(results, out):
    names = [r[0] for r in results]
    vals = [r[1] for r in results]
    top = max(vals + [1]) * 1.15
    bw = (W - 2 * M) / max(len(vals), 1)
    body = []
    for i, (n, v) in enumerate(results):
        h = (H - 2 * M) * v / top
        x = M + i * bw + bw * 0.15
        y = H - M - h
        body.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (x, y, bw * 0.7, h, COLORS[i % len(COLORS)]))
        body.append('<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>' % (x + bw * 0.35, y - 4, v))
        body.append('<text x="%.1f" y="%d" text-anchor="middle" font-size="10">%s</text>' % (x + bw * 0.35, H - M + 16, n))
    body.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (M, H - M, W - M, H - M))
    body.append('<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">MB/s (median)</text>' % (H // 2, H // 2))
    svg(out, "\n".join(body), "Download throughput")


def read_hgrm(path):
    pts = []
    for line in open(path):
        parts = line.split()
        if len(parts) == 4 and not line.startswith("#"):
            try:
                v, p = float(parts[0]), float(parts[1])
            except ValueError:
                continue
            if p < 1.0:
                pts.append((v, p))
    return pts


def curves(series, out):
    if not series:
        return
    xmax = 4.0  # up to 99.99th percentile: 1/(1-p) = 10^4
    ymax = max(v for _, pts in series for v, _ in pts) * 1.1 or 1
    body = []
    for i, (name, pts) in enumerate(series):
        coords = []
        for v, p in pts:
            x = M + (W - 2 * M) * min(math.log10(1.0 / (1.0 - p)), xmax) / xmax
            y = H - M - (H - 2 * M) * v / ymax
            coords.append("%.1f,%.1f" % (x, y))
        body.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (COLORS[i % len(COLORS)], " ".join(coords)))
        body.append('<text x="%d" y="%d" fill="%s">%s</text>' % (M + 10, M + 16 * i, COLORS[i % len(COLORS)], name))
    for k, label in enumerate(["0%", "90%", "99%", "99.9%", "99.99%"]):
        x = M + (W - 2 * M) * k / xmax
        body.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, H - M + 16, label))
    for k in range(5):
        y = H - M - (H - 2 * M) * k / 4
        body.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (M - 4, y + 4, ymax * k / 4))
    body.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (M, H - M, W - M, H - M))
    body.append('<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">piece latency (ms)</text>' % (H // 2, H // 2))
    svg(out, "\n".join(body), "Piece latency by percentile (request sent to verified)")


def main():
    root = sys.argv[1]
    results, series = [], []
    for summary in sorted(glob.glob(os.path.join(root, "*", "summary.json"))):
        d = json.load(open(summary))
        name = os.path.basename(os.path.dirname(summary))
        results.append((name, d.get("median_mbps", 0.0)))
        hgrms = sorted(glob.glob(os.path.join(os.path.dirname(summary), "latency-*.hgrm")))
        if hgrms:
            series.append((name, read_hgrm(hgrms[-1])))
    if results:
        bars(results, os.path.join(root, "throughput.svg"))
    curves(series, os.path.join(root, "latency.svg"))
    print("wrote plots into %s" % root)


if __name__ == "__main__":
    main()
