#!/usr/bin/env bash
# The main job on a fresh machine: build `bulwark`, create an embedded store in a temporary
# directory, generate keys of every family, sign and encrypt with them, and check every result
# with stock OpenSSL. Prints each command it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq openssl; }
cargo build --release --locked -p bulwark-cli
BULWARK="$PWD/target/release/bulwark"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

export BULWARK_STORE="$work/demo.db"
# Demo credentials only. Real deployments type PINs at the prompt or use --pin-file.
export BULWARK_SO_PIN="demo-so-pin" BULWARK_PIN="demo-user-pin"
export BULWARK_STATE_DIR="$work/state"

run() { echo "+ $*"; "$@"; }

run "$BULWARK" init --label demo
run "$BULWARK" selftest
echo "hello from bulwark" > msg.txt
for t in rsa-2048 ec-p256 ec-p384 ec-secp256k1; do
  run "$BULWARK" key generate --type "$t" --label "$t"
  run "$BULWARK" key public "$t" --out "$t.pem"
  run "$BULWARK" sign --key "$t" --in msg.txt --out "$t.sig"
  case $t in ec-p384) d=-sha384 ;; *) d=-sha256 ;; esac
  run openssl dgst "$d" -verify "$t.pem" -signature "$t.sig" msg.txt
done
run "$BULWARK" key generate --type ed25519 --label ed
run "$BULWARK" key public ed --out ed.pem
run "$BULWARK" sign --key ed --in msg.txt --out ed.sig
run openssl pkeyutl -verify -pubin -inkey ed.pem -rawin -in msg.txt -sigfile ed.sig
run "$BULWARK" key generate --type ml-dsa-65 --label pq
run "$BULWARK" sign --key pq --in msg.txt --out pq.sig
run "$BULWARK" verify --key pq --in msg.txt --sig pq.sig
run "$BULWARK" key generate --type aes-256 --label data
run "$BULWARK" encrypt --key data --in msg.txt --out msg.enc
run "$BULWARK" decrypt --key data --in msg.enc --out msg.dec
run cmp msg.txt msg.dec
run "$BULWARK" key list
run "$BULWARK" key show data
echo "+ $BULWARK key export data   (refused: the key is sensitive)"
"$BULWARK" key export data || true
run "$BULWARK" random --bytes 16 --hex
run "$BULWARK" status
echo "demo OK"
