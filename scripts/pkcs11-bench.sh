#!/usr/bin/env bash
# Benchmarks libbulwark_pkcs11.so (release) against SoftHSMv2 in the same run with
# ../shared/bench/p11bench, and prints the JSON lines to OUT (default target/pkcs11-bench.jsonl).
#
#   scripts/pkcs11-bench.sh [OUT.jsonl]
#
# Environment: SECONDS_PER (3), REPEAT (2), THREADS (1,2), WORKLOADS ("crypto keygen"),
# OBJECT_COUNTS ("1000 100000"; find-by-label after populating that many token objects),
# POPULATE_BUDGET (600 s per populate step), QUIET_WAIT (10), RETRIES (1), SKIP_SOFTHSM=1, BENCH_DIR (../shared/bench),
# TOKEN_DIR (default /dev/shm/bulwark-bench: tmpfs keeps the disk out of the numbers).
# Needs softhsm2 and opensc (installed with apt when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/pkcs11-bench.jsonl}
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
SECONDS_PER=${SECONDS_PER:-3}
REPEAT=${REPEAT:-2}
THREADS=${THREADS:-1,2}
WORKLOADS=${WORKLOADS:-crypto keygen}
OBJECT_COUNTS=${OBJECT_COUNTS:-1000 100000}
POPULATE_BUDGET=${POPULATE_BUDGET:-600}
TOKEN_DIR=${TOKEN_DIR:-/dev/shm/bulwark-bench}
SOFTHSM=${SOFTHSM:-/usr/lib/softhsm/libsofthsm2.so}

if ! command -v pkcs11-tool >/dev/null || { [ -z "${SKIP_SOFTHSM:-}" ] && [ ! -f "$SOFTHSM" ]; }; then
  [ "$(id -u)" = 0 ] || { echo "install softhsm2 and opensc first" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 opensc >/dev/null
fi

cargo build --release -q -p bulwark-pkcs11 --locked
BW=$ROOT/target/release/libbulwark_pkcs11.so
(cd "$BENCH_DIR/p11bench" && CARGO_TARGET_DIR=$ROOT/target/p11bench cargo build --release -q)
B=$ROOT/target/p11bench/release/p11bench

rm -rf "$TOKEN_DIR"
mkdir -p "$TOKEN_DIR/bulwark" "$TOKEN_DIR/softhsm"
printf '[[slot]]\nlabel = "bench"\nstore = "%s/bulwark/token.db"\n' "$TOKEN_DIR" > "$TOKEN_DIR/pkcs11.toml"
printf 'directories.tokendir = %s/softhsm\nobjectstore.backend = file\n' "$TOKEN_DIR" > "$TOKEN_DIR/softhsm2.conf"
export BULWARK_PKCS11_CONF=$TOKEN_DIR/pkcs11.toml SOFTHSM2_CONF=$TOKEN_DIR/softhsm2.conf

modules=("$BW")
[ -n "${SKIP_SOFTHSM:-}" ] || modules+=("$SOFTHSM")
for m in "${modules[@]}"; do
  pkcs11-tool --module "$m" --init-token --label bench --so-pin 12345678 >/dev/null
  pkcs11-tool --module "$m" --token-label bench --init-pin --login --so-pin 12345678 --pin 1234 >/dev/null
done

nice_cmd=()
[ "$(id -u)" = 0 ] && nice_cmd=(nice -n -10)
run() { # module tag args...
  local m=$1 tag=$2; shift 2
  "${nice_cmd[@]}" "$B" --module "$m" --token-label bench --pin 1234 --tag "$tag" --out "$OUT" \
    --quiet-wait "${QUIET_WAIT:-10}" --retries "${RETRIES:-1}" "$@"
}

# Crypto and keygen, module by module per workload group so both see the same machine state.
for w in $WORKLOADS; do
  for m in "${modules[@]}"; do
    run "$m" "$(basename "$m")" --threads "$THREADS" --seconds "$SECONDS_PER" --keygen-seconds "$SECONDS_PER" \
      --repeat "$REPEAT" "$w"
  done
done

# Token with many objects: populate, then find-by-label.
start=0
for n in $OBJECT_COUNTS; do
  for m in "${modules[@]}"; do
    run "$m" "$(basename "$m")-objects" --start "$start" --count "$n" --max-seconds "$POPULATE_BUDGET" populate || true
    run "$m" "$(basename "$m")-objects" --count "$n" --threads 1 --seconds "$SECONDS_PER" --repeat "$REPEAT" \
      find-by-label open-session login startup || true
  done
  start=$n
done
echo "results in $OUT"
