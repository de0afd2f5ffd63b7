#!/usr/bin/env python3
"""Turns scripts/pkcs11-bench.sh output (p11bench JSON lines) into the markdown tables of
docs/benchmarks.md: Bulwark vs SoftHSMv2 (1 and 2 threads), the ratio, and the raw aws-lc-rs
ceiling from ../shared/bench/results/raw.jsonl. Every figure is copied from the JSON: the median
of the clean runs of a cell (all runs when none was clean, marked with *), every run in brackets.

Usage: pkcs11-bench-table.py BENCH.jsonl [RAW.jsonl]
"""
import json
import statistics
import sys
from collections import defaultdict

ORDER = ["ecdsa-p256-sign", "ecdsa-p384-sign", "ed25519-sign", "rsa2048-sign", "rsa2048-pss-sign",
         "aes256-gcm-encrypt-4k", "aes256-gcm-encrypt-64b", "hmac-sha256-sign-64b",
         "rsa2048-verify", "ecdsa-p256-verify", "keygen-aes256", "keygen-p256", "keygen-rsa2048"]


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def load(path):
    cells = defaultdict(list)
    objects = defaultdict(list)
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        if "error" in d or d.get("skipped"):
            continue
        mod = d.get("tag") or ("bulwark" if "bulwark" in d.get("module", "") else "softhsm2")
        if "objects" in d or d["workload"] == "populate":
            n = d.get("objects", d.get("count"))
            objects[(mod, d["workload"], n)].append(d)
        else:
            cells[(mod, d["workload"], d["threads"])].append(d)
    return cells, objects


def med(runs, key="ops_per_s"):
    clean = [r for r in runs if not r.get("noisy")]
    use = clean or runs
    v = statistics.median(r[key] for r in use)
    star = "" if clean else "*"
    each = " / ".join(fmt(r[key]) for r in use)
    return v, f"{fmt(v)}{star} ({each})" if len(use) > 1 else f"{fmt(v)}{star}"


def main():
    cells, objects = load(sys.argv[1])
    raw = {}
    if len(sys.argv) > 2:
        rr = defaultdict(list)
        for line in open(sys.argv[2]):
            d = json.loads(line)
            if d.get("engine", "").startswith("aws-lc") and d.get("threads") == 1:
                rr[d["workload"]].append(d)
        raw = {w: med(v)[0] for w, v in rr.items()}
    mods = sorted({k[0] for k in cells}, key=lambda m: (m.startswith("softhsm"), m))
    ref = next((m for m in mods if m.startswith("softhsm")), None)
    head = "| workload | " + " | ".join(f"{m} 1 thread | {m} 2 threads" for m in mods)
    head += "".join(f" | {m} / {ref} (2 threads)" for m in mods if m != ref and ref)
    head += "".join(f" | {m} 1 thread / raw aws-lc-rs" for m in mods if m != ref)
    print(head + " |")
    print("|---" * (head.count("|") - 1) + "|")
    for w in ORDER:
        row, vals = [], {}
        for mod in mods:
            for t in (1, 2):
                runs = cells.get((mod, w, t))
                if runs:
                    vals[(mod, t)], txt = med(runs)
                    row.append(txt)
                else:
                    row.append("–")
        if all(c == "–" for c in row):
            continue
        for m in mods:
            if m != ref and ref:
                row.append(f"{vals[(m, 2)] / vals[(ref, 2)]:.2f}×" if (m, 2) in vals and (ref, 2) in vals else "–")
        for m in mods:
            if m != ref:
                row.append(f"{100 * vals[(m, 1)] / raw[w]:.0f} %" if (m, 1) in vals and w in raw else "–")
        print(f"| {w} | " + " | ".join(row) + " |")
    if objects:
        print()
        print("| token objects | module | populate (objects/s) | find-by-label (ops/s) | find p50 (µs) | open-session (ops/s) | login (ops/s) |")
        print("|---|---|---|---|---|---|---|")
        for (mod, w, n) in sorted({(k[0], "x", k[2]) for k in objects}, key=lambda k: (k[2] or 0, k[0])):
            pop = objects.get((mod, "populate", n))
            find = objects.get((mod, "find-by-label", n))
            op = objects.get((mod, "open-session", n))
            lg = objects.get((mod, "login", n))
            c = lambda runs: med(runs)[1] if runs else "–"
            p50 = med(find, "p50_us")[1] if find else "–"
            print(f"| {n:,} | {mod} | {c(pop)} | {c(find)} | {p50} | {c(op)} | {c(lg)} |")


main()
