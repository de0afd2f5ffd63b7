#!/usr/bin/env python3
"""Markdown table from scripts/daemon-bench.sh JSON lines (several runs: min–max per cell)."""
import json
import re
import sys
from collections import defaultdict

cells = defaultdict(list)
for path in sys.argv[1:]:
    for line in open(path):
        d = json.loads(line)
        run = re.sub(r" bench-[0-9a-f]+", "", d["run"])
        run = re.sub(r" \(https?://[^)]*\)", "", run)
        cells[(d["audit_key_use"], run)].append(d)


def span(vals, fmt):
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)} – {fmt.format(hi)}"


def embedded(policy, op):
    for (p, run), ds in cells.items():
        if p == policy and run.startswith(f"embedded {op} "):
            return sum(d["ops_per_sec"] for d in ds) / len(ds)
    return None


print("| audit of key use | run | ops/s | p50 ms | p99 ms | vs embedded (same policy, mean) |")
print("|---|---|---:|---:|---:|---:|")
ORDER = {"bounded": 0, "durable": 1, "on": 1, "off": 2}
for (policy, run), ds in sorted(cells.items(), key=lambda kv: (ORDER.get(kv[0][0], 3), kv[0][1])):
    op = "sign" if " sign" in run else "encrypt"
    base = embedded(policy, op)
    mean = sum(d["ops_per_sec"] for d in ds) / len(ds)
    ratio = f"{100 * mean / base:.0f} %" if base else "–"
    print(f"| {policy} | {run} | {span([d['ops_per_sec'] for d in ds], '{:,.0f}')} | "
          f"{span([d['p50_ms'] for d in ds], '{:.2f}')} | {span([d['p99_ms'] for d in ds], '{:.2f}')} | {ratio} |")
