#!/usr/bin/env bash
# Runs the embedded token's per-operation benchmark (`cargo bench -p bulwark-core --bench token`),
# keeps its raw output in docs/bench-results/, and regenerates the table between the
# `core-bench:<tag>` markers of docs/benchmarks-core.md from it (medians as divan prints them).
#
# Usage: scripts/core-bench.sh TAG [NOTE]
#   TAG   names the run and its table (e.g. `before`, `after`); a marker pair
#         `<!-- core-bench:TAG:begin -->` / `<!-- core-bench:TAG:end -->` must exist in the doc.
#   NOTE  optional text for the line above the table (what tree was measured).
# CORE_BENCH_TREE=DIR measures another checkout (e.g. a `git worktree` of an older commit,
# built in this repository's target directory, so only the workspace crates are rebuilt) while
# the results still land here.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:?usage: scripts/core-bench.sh TAG [NOTE]}
note=${2:-}
out=docs/bench-results/core-token-$(date -u +%F)-$tag.txt
tree=$(realpath "${CORE_BENCH_TREE:-.}")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
{
  echo "# $(date -u +%FT%TZ) $(git -C "$tree" rev-parse --short HEAD)$(git -C "$tree" diff --quiet -- crates/bulwark-core || echo '+dirty') ${note}"
  echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$tree" && cargo bench -q -p bulwark-core --bench token 2>&1)
} | tee "$out"
if [ "$tree" != "$PWD" ]; then
  # Both trees build the same artifact, and cargo judges freshness by file times: make this
  # tree's next build rebuild bulwark-core rather than take the other tree's as fresh.
  touch crates/bulwark-core/src/lib.rs
fi
python3 - "$out" "$tag" <<'PY'
import re, sys
path, tag = sys.argv[1], sys.argv[2]
lines = open(path).read().splitlines()
header = lines[0].lstrip("# ")
load = lines[1].lstrip("# ")
group, med = None, {}
for l in lines:
    m = re.match(r"^[├╰]─ (\w+)\s", l)
    if m:
        group = m.group(1)
        continue
    m = re.match(r"^[│ ]\s+[├╰]─ (\w+)\s+(\S+ \S+)\s+│\s+(\S+ \S+)\s+│\s+(\S+ \S+)", l)
    if m and group:
        med[(group, m.group(1))] = m.group(4)

def ns(v):
    n, u = v.split()
    return float(n) * {"ns": 1, "µs": 1e3, "ms": 1e6}[u]

def fmt(x):
    return f"{x / 1e3:.2f} µs" if x >= 1e3 else f"{x:.0f} ns"

rows = [
    ("HMAC-SHA256, 64 B", "hmac_sha256_64b", "token_sign"),
    ("AES-256-GCM encrypt, 4 KiB", "aes256_gcm_4k", "token_encrypt"),
    ("ECDSA P-256 sign (SHA-256)", "ecdsa_p256_sign", "token_sign"),
    ("Ed25519 sign", "ed25519_sign", "token_sign"),
]
t = [f"Run: {header}; {load}. Raw output: `{path}`.", "",
     "| operation | raw aws-lc-rs | through `Token` | overhead | raw ÷ `Token` | on `KeyRef` |",
     "|---|---|---|---|---|---|"]
for name, g, tok in rows:
    raw, via = med.get((g, "raw")), med.get((g, tok))
    if raw is None or via is None:
        sys.exit(f"missing {g} in {path}")
    kr = med.get((g, "prepared"))
    r, v = ns(raw), ns(via)
    t.append(f"| {name} | {fmt(r)} | {fmt(v)} | {fmt(v - r)} | {100 * r / v:.0f} % | "
             f"{fmt(ns(kr)) if kr else '—'} |")
doc = "docs/benchmarks-core.md"
s = open(doc).read()
b, e = f"<!-- core-bench:{tag}:begin -->", f"<!-- core-bench:{tag}:end -->"
if b not in s or e not in s:
    sys.exit(f"{doc}: markers {b} / {e} not found")
i, j = s.index(b) + len(b), s.index(e)
open(doc, "w").write(s[:i] + "\n" + "\n".join(t) + "\n" + s[j:])
print(f"{doc}: table {tag} regenerated")
PY
