#!/usr/bin/env bash
# Benchmarks libbulwark_pkcs11.so (release) against SoftHSMv2 in the same run with
# ../shared/bench/p11bench, and prints the JSON lines to OUT (default target/pkcs11-bench.jsonl).
#
#   scripts/pkcs11-bench.sh [OUT.jsonl]
#
# Environment: SECONDS_PER (3), REPEAT (2), THREADS (1,2), WORKLOADS (the 13 crypto and keygen
# workloads; each is run on every module in turn, so all modules see the same machine state),
# EXTRA_MODULES ("tag=/path/lib.so ..." more modules to compare, e.g. another Bulwark build; a tag
# ending in -audit-off gets a store made with `bulwark init --audit-key-use off`),
# OBJECT_COUNTS ("1000 100000"; find-by-label after populating that many token objects),
# POPULATE_BUDGET (600 s per populate step), QUIET_WAIT (10), RETRIES (1), SKIP_SOFTHSM=1, BENCH_DIR (../shared/bench),
# TOKEN_DIR (default /dev/shm/bulwark-bench: tmpfs keeps the disk out of the numbers).
# BULWARK_MODULE: use this build instead of building target/release.
# Needs softhsm2 and opensc (installed with apt when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/target/pkcs11-bench.jsonl}
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
SECONDS_PER=${SECONDS_PER:-3}
REPEAT=${REPEAT:-2}
THREADS=${THREADS:-1,2}
WORKLOADS=${WORKLOADS:-ecdsa-p256-sign ecdsa-p384-sign ed25519-sign rsa2048-sign rsa2048-pss-sign aes256-gcm-encrypt-4k aes256-gcm-encrypt-64b hmac-sha256-sign-64b rsa2048-verify ecdsa-p256-verify keygen-aes256 keygen-p256 keygen-rsa2048}
OBJECT_COUNTS=${OBJECT_COUNTS:-1000 100000}
POPULATE_BUDGET=${POPULATE_BUDGET:-600}
TOKEN_DIR=${TOKEN_DIR:-/dev/shm/bulwark-bench}
SOFTHSM=${SOFTHSM:-/usr/lib/softhsm/libsofthsm2.so}

if ! command -v pkcs11-tool >/dev/null || { [ -z "${SKIP_SOFTHSM:-}" ] && [ ! -f "$SOFTHSM" ]; }; then
  [ "$(id -u)" = 0 ] || { echo "install softhsm2 and opensc first" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 opensc >/dev/null
fi

if [ -n "${BULWARK_MODULE:-}" ]; then
  BW=$BULWARK_MODULE
else
  cargo build --release -q -p bulwark-pkcs11 -p bulwark-cli --locked
  BW=$ROOT/target/release/libbulwark_pkcs11.so
fi
(cd "$BENCH_DIR/p11bench" && CARGO_TARGET_DIR=$ROOT/target/p11bench cargo build --release -q)
B=$ROOT/target/p11bench/release/p11bench

rm -rf "$TOKEN_DIR"
mkdir -p "$TOKEN_DIR/bulwark" "$TOKEN_DIR/softhsm"
printf '[[slot]]\nlabel = "bench"\nstore = "%s/bulwark/token.db"\n' "$TOKEN_DIR" > "$TOKEN_DIR/pkcs11.toml"
printf 'directories.tokendir = %s/softhsm\nobjectstore.backend = file\n' "$TOKEN_DIR" > "$TOKEN_DIR/softhsm2.conf"
export BULWARK_PKCS11_CONF=$TOKEN_DIR/pkcs11.toml SOFTHSM2_CONF=$TOKEN_DIR/softhsm2.conf

# "tag=path" pairs; the tag goes into every JSON line.
modules=("bulwark=$BW")
for extra in ${EXTRA_MODULES:-}; do modules+=("$extra"); done
[ -n "${SKIP_SOFTHSM:-}" ] || modules+=("softhsm2=$SOFTHSM")
conf() { # tag -> that module's own Bulwark configuration (each Bulwark build gets its own store)
  mkdir -p "$TOKEN_DIR/$1"
  printf '[[slot]]\nlabel = "bench"\nstore = "%s/%s/token.db"\n' "$TOKEN_DIR" "$1" > "$TOKEN_DIR/$1.toml"
  echo "$TOKEN_DIR/$1.toml"
}
for tm in "${modules[@]}"; do
  m=${tm#*=}
  BULWARK_PKCS11_CONF=$(conf "${tm%%=*}")
  export BULWARK_PKCS11_CONF
  if [[ ${tm%%=*} == *-audit-off ]]; then
    # A Bulwark store whose policy does not record successful key uses (bulwark init
    # --audit-key-use off); refusals, key management and administration are still recorded.
    BULWARK_SO_PIN=12345678 BULWARK_PIN=1234 "$ROOT/target/release/bulwark" \
      --store "$TOKEN_DIR/${tm%%=*}/token.db" init --label bench --audit-key-use off >/dev/null
  else
    pkcs11-tool --module "$m" --init-token --label bench --so-pin 12345678 >/dev/null
    pkcs11-tool --module "$m" --token-label bench --init-pin --login --so-pin 12345678 --pin 1234 >/dev/null
  fi
done

nice_cmd=()
[ "$(id -u)" = 0 ] && nice_cmd=(nice -n -10)
run() { # tag=module args...
  local tm=$1; shift
  BULWARK_PKCS11_CONF=$TOKEN_DIR/${tm%%=*}.toml "${nice_cmd[@]}" "$B" --module "${tm#*=}" --token-label bench --pin 1234 --tag "${tm%%=*}" --out "$OUT" \
    --quiet-wait "${QUIET_WAIT:-10}" --retries "${RETRIES:-1}" "$@"
}

# Crypto and keygen: each workload on every module in turn.
for w in $WORKLOADS; do
  for tm in "${modules[@]}"; do
    run "$tm" --threads "$THREADS" --seconds "$SECONDS_PER" --keygen-seconds "$SECONDS_PER" --repeat "$REPEAT" "$w"
  done
done

# Token with many objects: populate, then find-by-label.
start=0
for n in $OBJECT_COUNTS; do
  for tm in "${modules[@]}"; do
    run "$tm" --start "$start" --count "$n" --max-seconds "$POPULATE_BUDGET" populate || true
    run "$tm" --count "$n" --threads 1 --seconds "$SECONDS_PER" --repeat "$REPEAT" \
      find-by-label open-session login startup || true
  done
  start=$n
done
echo "results in $OUT"
