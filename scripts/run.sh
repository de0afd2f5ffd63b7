#!/usr/bin/env bash
# The main job on a fresh machine: build Bulwark, then start `bulwarkd --dev`, an initialized,
# unsealed HSM on 127.0.0.1 with a 2-of-3 unseal quorum, client certificates and dev
# credentials written to DIR (default: a new temporary directory). NOT FOR PRODUCTION.
# In another terminal:  . DIR/officer.env (crypto officer) or . DIR/dev.env (crypto user),
# then target/release/bulwark key list
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p bulwarkd -p bulwark-cli
dir=${1:-${BULWARK_DEV_DIR:-$(mktemp -d /tmp/bulwark-dev.XXXXXX)}}
echo "bulwark CLI: $PWD/target/release/bulwark   (use it after: . $dir/officer.env or . $dir/dev.env)"
exec target/release/bulwarkd --dev --dir "$dir"
