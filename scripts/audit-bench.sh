#!/usr/bin/env bash
# Runs the audit log benchmark (`cargo bench -p bulwark-core --bench audit`), keeps its raw
# output in docs/bench-results/, and replaces the tables between the `audit-bench:begin` /
# `audit-bench:end` markers of docs/benchmarks-core.md with the ones the bench printed (between
# its `--- tables ---` and `--- end ---` lines). Same flow as scripts/core-bench.sh.
#
# Usage: scripts/audit-bench.sh [NOTE]   (BULWARK_BENCH_SECS, _RUNS, _THREADS pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
note=${1:-}
out=docs/bench-results/core-audit-$(date -u +%F).txt
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
{
  echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD)$(git diff --quiet -- crates/bulwark-core || echo '+dirty') ${note}"
  echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
  cargo bench -q -p bulwark-core --bench audit 2>&1
} | tee "$out"
python3 - "$out" <<'PY'
import sys
path = sys.argv[1]
lines = open(path).read().splitlines()
header, load = lines[0].lstrip("# "), lines[1].lstrip("# ")
try:
    i, j = lines.index("--- tables ---"), lines.index("--- end ---")
except ValueError:
    sys.exit(f"no tables in {path}")
body = [f"Run: {header}; {load}. Raw output: `{path}`.", ""] + lines[i + 1 : j]
doc = "docs/benchmarks-core.md"
s = open(doc).read()
b, e = "<!-- audit-bench:begin -->", "<!-- audit-bench:end -->"
if b not in s or e not in s:
    sys.exit(f"{doc}: markers {b} / {e} not found")
k, m = s.index(b) + len(b), s.index(e)
open(doc, "w").write(s[:k] + "\n" + "\n".join(body).rstrip() + "\n" + s[m:])
print(f"{doc}: audit tables regenerated")
PY
