#!/usr/bin/env bash
# Cluster benchmark (docs/cluster.md): sign throughput with 1, 2 and 3 nodes of a dev cluster
# (`bulwarkd --dev --nodes 3`, a private PostgreSQL on this machine), and the time a client
# needs to fail over when its node dies. Prints a table; the figures are this machine's.
#
#   scripts/cluster-bench.sh [debug|release] [seconds] [clients per node]
#
# Needs Debian's postgresql package (scripts/test.sh installs it) and a built bulwarkd and
# bulwark (target/<profile>/). Every node runs on the same machine, so on a machine with few
# cores the nodes compete for them: read "per-node efficiency" as how much of one node's rate
# each added node keeps, not as scaling on separate machines.
set -euo pipefail

profile=${1:-debug}
secs=${2:-5}
clients=${3:-4}
target=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}
bulwarkd=$target/$profile/bulwarkd
bulwark=$target/$profile/bulwark
for b in "$bulwarkd" "$bulwark"; do
    [[ -x $b ]] || { echo "missing $b (cargo build --profile ${profile/debug/dev} -p bulwarkd -p bulwark-cli)" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/bulwark-cluster-bench.XXXXXX)
log=$dir/cluster.log
"$bulwarkd" --dev --nodes 3 --lease-ms 3000 --dir "$dir" >"$log" 2>&1 &
parent=$!
cleanup() {
    kill -CONT "$(cat "$dir"/node-*/pid 2>/dev/null)" 2>/dev/null || true
    kill "$parent" 2>/dev/null || true
    wait "$parent" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
    grep -q "cluster ready" "$log" && break
    kill -0 "$parent" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
grep -q "cluster ready" "$log" || { echo "the dev cluster did not start" >&2; exit 1; }

first() { (. "$dir/node-$1/$2"; echo "${BULWARK_ENDPOINT%%,*}"); }
as() { # as NODE ENVFILE CMD...: runs the CLI as that env file's user against that node only
    local node=$1 env=$2; shift 2
    (. "$dir/node-$node/$env"; BULWARK_ENDPOINT=$(first "$node" "$env") "$bulwark" "$@")
}
as 1 officer.env key generate --type ec-p256 --label bench >/dev/null
as 1 officer.env access bench --grant user:user=sign,verify,public >/dev/null

rate() { # rate NODE: ops/s of one bench run against NODE (printed line: "... N ops/s ...")
    as "$1" dev.env bench --key bench --clients "$clients" --seconds "$secs" --batch 0 |
        awk '{for (i = 1; i < NF; i++) if ($(i+1) == "ops/s") print $i}'
}

echo "cluster sign benchmark: ECDSA P-256, $clients clients per node, ${secs}s per run, $profile build, $(nproc) cores"
printf '%-6s %12s %14s %12s\n' nodes "total ops/s" "per node ops/s" efficiency
single=0
for n in 1 2 3; do
    files=() pids=()
    for k in $(seq 1 "$n"); do
        f=$dir/rate-$n-$k
        files+=("$f")
        rate "$k" >"$f" &
        pids+=($!)
    done
    wait "${pids[@]}"
    total=$(cat "${files[@]}" | awk '{s += $1} END {printf "%.0f", s}')
    [[ $n == 1 ]] && single=$total
    awk -v n="$n" -v t="$total" -v s="$single" \
        'BEGIN {printf "%-6d %12d %14d %11.0f%%\n", n, t, t / n, (s > 0 ? 100 * t / (n * s) : 0)}'
done

# Failover time seen by a client: node 1 killed, the next call (moved to node 2, re-login
# included) timed from the client's side.
ms() { echo $(( $(date +%s%N) / 1000000 )); }
(
    . "$dir/node-1/dev.env"
    echo hi >"$dir/msg"
    t0=$(ms)
    "$bulwark" sign --key bench --in "$dir/msg" --out "$dir/sig" >/dev/null
    t1=$(ms)
    kill -KILL "$(cat "$dir/node-1/pid")"
    t2=$(ms)
    "$bulwark" sign --key bench --in "$dir/msg" --out "$dir/sig" >/dev/null
    t3=$(ms)
    echo "failover: one sign with node 1 alive $((t1 - t0)) ms (connect + login + sign); with node 1 dead $((t3 - t2)) ms (refused, then node 2)"
)
