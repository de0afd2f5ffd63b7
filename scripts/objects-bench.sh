#!/usr/bin/env bash
# Lookup cost against the number of token objects, store on disk: fills one Bulwark store (the
# default policy) to each count in COUNTS with `bulwark bench --op create --populate` (64
# threads, durable group commit, labels p11bench-obj-N), and after each step measures
# find-by-label, open-session and login through the PKCS#11 module with ../shared/bench's
# p11bench (1 thread). JSON lines (both tools) go to OUT.
# Usage: scripts/objects-bench.sh [OUT] (default target/objects-bench.jsonl)
# Variables: COUNTS ("10000 100000 1000000"), DIR (/var/tmp/bulwark-objects: a disk, not tmpfs),
# SECONDS_PER (3), REPEAT (2), CLIENTS (64), BENCH_DIR (../shared/bench), QUIET_WAIT (5).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/target/objects-bench.jsonl}
COUNTS=${COUNTS:-10000 100000 1000000}
DIR=${DIR:-/var/tmp/bulwark-objects}
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
cd "$ROOT"
cargo build --release --locked -q -p bulwark-cli -p bulwark-pkcs11
(cd "$BENCH_DIR/p11bench" && CARGO_TARGET_DIR=$ROOT/target/p11bench cargo build --release -q)
B=$ROOT/target/p11bench/release/p11bench
rm -rf "$DIR"
mkdir -p "$DIR"
export BULWARK_STATE_DIR=$DIR/state
printf '[[slot]]\nlabel = "bench"\nstore = "%s/token.db"\n' "$DIR" > "$DIR/pkcs11.toml"
export BULWARK_PKCS11_CONF=$DIR/pkcs11.toml
BULWARK_SO_PIN=12345678 BULWARK_PIN=1234 target/release/bulwark --store "$DIR/token.db" \
  init --label bench >/dev/null
nice_cmd=()
[ "$(id -u)" = 0 ] && nice_cmd=(nice -n -10)
from=0
for n in $COUNTS; do
  BULWARK_PIN=1234 "${nice_cmd[@]}" target/release/bulwark --store "$DIR/token.db" bench \
    --op create --populate "$n" --populate-from "$from" --label-prefix p11bench-obj- \
    --clients "${CLIENTS:-64}" --json | tee -a "$OUT"
  "${nice_cmd[@]}" "$B" --module "$ROOT/target/release/libbulwark_pkcs11.so" --token-label bench \
    --pin 1234 --tag "bulwark-disk-$n" --out "$OUT" --quiet-wait "${QUIET_WAIT:-5}" \
    --count "$n" --threads 1 --seconds "${SECONDS_PER:-3}" --repeat "${REPEAT:-2}" \
    find-by-label open-session login startup
  from=$n
done
du -sh "$DIR/token.db" >&2
echo "results in $OUT" >&2
