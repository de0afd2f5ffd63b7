#!/usr/bin/env bash
# Runs the whole Bulwark test suite from a clean clone: installs the external tools the tests
# check against (OpenSSL, Python with dilithium-py and cryptography, PostgreSQL), then
# `cargo test --workspace` once.
# Slow suites (fuzzing, soaks) are not part of this run; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v cc >/dev/null || need_apt+=(gcc)
command -v strace >/dev/null || need_apt+=(strace)  # tracer-as-tamper test
# PostgreSQL server binaries: bulwark-store-pg's tests start a private server (initdb + pg_ctl).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing tools: ${need_apt[*]} (install them, or run as root)" >&2; exit 1
  fi
fi

# Python tools in a private venv (independent implementations used as test oracles).
venv=target/test-venv
if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c 'import dilithium_py, cryptography' 2>/dev/null; then
  python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; python3 -m venv --without-pip "$venv"; }
  "$venv/bin/python3" -m pip --version >/dev/null 2>&1 || python3 -m pip --python "$venv/bin/python3" --version >/dev/null
  # cryptography: the BYOK tests' independent RSA-OAEP / AES-KWP (crates/bulwark-cli/tests/byok.rs).
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check dilithium-py==1.5.1 \
    cryptography==48.0.0
fi
export PATH="$PWD/$venv/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Licences, bans and sources (advisories where the advisory database can be fetched).
scripts/deny.sh
cargo test --workspace --locked "$@"

# Real PKCS#11 clients (pkcs11-tool, p11tool, OpenSSL's pkcs11 engine) against the module that
# `cargo test` just built.
scripts/pkcs11-clients.sh

# The applications people use (OpenSSL with pkcs11-provider, NSS, Java, OpenSSH, GnuTLS certtool,
# pkcs11-tool's wrap flows), on an embedded slot and a remote slot of a `bulwarkd --dev`; then
# the installation (install.sh and the Debian package) in a fresh root, driven through
# p11-kit-proxy.so. Both use the binaries built above.
bin=${CARGO_TARGET_DIR:-target}/debug
scripts/pkcs11-clients-apps.sh "$bin/libbulwark_pkcs11.so" "$bin/bulwarkd"
scripts/install-test.sh "$bin"
