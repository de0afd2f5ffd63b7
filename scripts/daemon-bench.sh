#!/usr/bin/env bash
# Remote vs embedded throughput under the store policies of the audit of key uses, using
# `bulwark bench`: for each policy in POLICIES (default "bounded off"; also "durable"), an embedded store (PIN policy) and a dev daemon (quorum policy) on loopback,
# client threads and daemon on this machine. Prints `bulwark bench --json` lines tagged with the
# policy. Usage: scripts/daemon-bench.sh [CLIENTS] [SECONDS] [BATCH] > out.jsonl
# BIN (default target/release) names the directory holding `bulwark` and `bulwarkd`.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-32}
seconds=${2:-5}
batch=${3:-64}
bin=${BIN:-target/release}
if [[ -z ${BIN:-} ]]; then
    cargo build --release --locked -q -p bulwark-cli -p bulwarkd
fi
work=$(mktemp -d)
daemon=
cleanup() {
    [[ -n $daemon ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
export BULWARK_STATE_DIR=$work/state

tag() { sed "s/^{/{\"audit_key_use\":\"$1\",\"mode\":\"$2\",/"; }

for policy in ${POLICIES:-bounded off}; do
    # Embedded: a PIN store with that policy, `clients` threads on one token.
    store=$work/embedded-$policy.db
    BULWARK_SO_PIN=so-pin-bench BULWARK_PIN=user-pin-bench \
        "$bin/bulwark" --store "$store" init --label bench --audit-key-use "$policy" >/dev/null
    for op in sign encrypt; do
        BULWARK_PIN=user-pin-bench "$bin/bulwark" --store "$store" bench --op "$op" \
            --clients "$clients" --seconds "$seconds" --json | tag "$policy" embedded
    done
    # Remote: a dev daemon whose store has that policy.
    dir=$work/dev-$policy
    "$bin/bulwarkd" --dev --dir "$dir" --listen 127.0.0.1:0 --dev-audit-key-use "$policy" \
        >"$work/daemon-$policy.out" 2>/dev/null &
    daemon=$!
    for _ in $(seq 100); do
        grep -q '^listening on ' "$work/daemon-$policy.out" 2>/dev/null && break
        sleep 0.1
    done
    (
        # shellcheck disable=SC1091
        . "$dir/officer.env"
        for op in sign encrypt; do
            "$bin/bulwark" bench --op "$op" --clients "$clients" --seconds "$seconds" \
                --batch "$batch" --json | tag "$policy" remote
        done
    )
    kill "$daemon"
    wait "$daemon" 2>/dev/null || true
    daemon=
done
