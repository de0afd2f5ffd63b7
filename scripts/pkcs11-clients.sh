#!/usr/bin/env bash
# Drives libbulwark_pkcs11.so with real PKCS#11 clients: OpenSC pkcs11-tool (including --test),
# GnuTLS p11tool, Python PyKCS11 (threads, error codes), and OpenSSL through libengine-pkcs11-openssl (a self-signed certificate whose
# key lives in the token, verified with plain openssl). Installs the clients with apt when they
# are missing. Non-interactive; any failure stops the script with a non-zero exit.
#
# Usage: scripts/pkcs11-clients.sh [path/to/libbulwark_pkcs11.so]
# Without an argument it builds the module (debug) first.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v p11tool >/dev/null || need+=(gnutls-bin)
command -v openssl >/dev/null || need+=(openssl)
/usr/bin/python3 -c 'import PyKCS11' 2>/dev/null || need+=(python3-pykcs11)
engine=$(ls /usr/lib/*/engines-3/pkcs11.so 2>/dev/null | head -1 || true)
[ -n "$engine" ] || need+=(libengine-pkcs11-openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing packages: ${need[*]} (install them, or run as root)" >&2; exit 1
  fi
  engine=$(ls /usr/lib/*/engines-3/pkcs11.so 2>/dev/null | head -1)
fi

if [ $# -ge 1 ]; then
  M=$(realpath "$1")
else
  cargo build -q -p bulwark-pkcs11 --locked
  M=$PWD/target/debug/libbulwark_pkcs11.so
fi
[ -f "$M" ] || { echo "module not found: $M" >&2; exit 1; }

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
printf '[[slot]]\nlabel = "clients"\nstore = "%s/token.db"\n' "$T" > "$T/pkcs11.toml"
export BULWARK_PKCS11_CONF=$T/pkcs11.toml
SO=87654321
PIN=123456
step() { printf '\n== %s\n' "$*"; }
p11() { pkcs11-tool --module "$M" "$@"; }

step "pkcs11-tool: uninitialized token is visible"
p11 -L | tee "$T/L0"
grep -q "uninitialized" "$T/L0"

step "pkcs11-tool: --init-token / --init-pin"
p11 --init-token --label ci --so-pin "$SO"
p11 --init-pin --login --so-pin "$SO" --pin "$PIN"
p11 -L | tee "$T/L1"
grep -q "token initialized" "$T/L1"
grep -q "PIN initialized" "$T/L1"

step "pkcs11-tool: wrong PIN is refused"
if p11 --login --pin 000000 -O >/dev/null 2>&1; then echo "login with a wrong PIN succeeded" >&2; exit 1; fi

step "pkcs11-tool: mechanisms"
p11 -M | tee "$T/M"
grep -q "ECDSA" "$T/M"

step "pkcs11-tool: EC P-256, RSA-2048 and AES key generation"
p11 --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 01 --label ec
p11 --login --pin "$PIN" --keypairgen --key-type rsa:2048 --id 02 --label rsa
p11 --login --pin "$PIN" --keygen --key-type AES:32 --id 03 --label aes

step "pkcs11-tool: ECDSA sign in the token, verify with plain openssl"
head -c 1000 /dev/urandom > "$T/data"
p11 --login --pin "$PIN" --sign --id 01 -m ECDSA-SHA256 --signature-format openssl -i "$T/data" -o "$T/sig.der"
# (pkcs11-tool 0.23 --read-object cannot rebuild EC public keys here; GnuTLS exports them.)
GNUTLS_PIN=$PIN p11tool --provider "$M" --export-pubkey "pkcs11:token=ci;object=ec;type=public" > "$T/ec.pub.pem"
openssl pkey -pubin -in "$T/ec.pub.pem" -outform DER -out "$T/ec.pub.der"
openssl dgst -sha256 -verify "$T/ec.pub.pem" -signature "$T/sig.der" "$T/data"

step "pkcs11-tool: RSA-PSS sign in the token, verify with plain openssl"
p11 --login --pin "$PIN" --sign --id 02 -m SHA256-RSA-PKCS-PSS --mgf MGF1-SHA256 --salt-len 32 -i "$T/data" -o "$T/rsa.sig"
GNUTLS_PIN=$PIN p11tool --provider "$M" --export-pubkey "pkcs11:token=ci;object=rsa;type=public" > "$T/rsa.pub.pem"
openssl pkey -pubin -in "$T/rsa.pub.pem" -outform DER -out "$T/rsa.pub.der"
openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 \
  -verify "$T/rsa.pub.pem" -signature "$T/rsa.sig" "$T/data"

step "pkcs11-tool: RSA-OAEP encrypt with openssl, decrypt in the token"
printf 'secret message' > "$T/plain"
openssl pkeyutl -encrypt -pubin -inkey "$T/rsa.pub.pem" -pkeyopt rsa_padding_mode:oaep \
  -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in "$T/plain" -out "$T/ct"
p11 --login --pin "$PIN" --decrypt --id 02 -m RSA-PKCS-OAEP --hash-algorithm SHA256 --mgf MGF1-SHA256 \
  -i "$T/ct" -o "$T/dec"
cmp "$T/plain" "$T/dec"

step "pkcs11-tool: --test"
p11 --login --pin "$PIN" --test 2>&1 | tee "$T/test.log"
# CKM_RSA_PKCS over arbitrary (non-DigestInfo) data is refused by design (CKR_DATA_LEN_RANGE);
# every other check must pass.
errors=$(grep -Eo '^[0-9]+ errors' "$T/test.log" | grep -Eo '^[0-9]+' || echo 0)
rsa_raw=$(grep -c 'RSA-PKCS: *ERR: C_Sign() returned CKR_DATA_LEN_RANGE' "$T/test.log" || true)
if [ "$errors" -gt "$rsa_raw" ]; then echo "pkcs11-tool --test: $errors errors" >&2; exit 1; fi

step "p11tool (GnuTLS): list everything"
export GNUTLS_PIN=$PIN
p11tool --provider "$M" --list-tokens | tee "$T/tokens"
grep -q "Label: ci" "$T/tokens"
p11tool --provider "$M" --login --list-all "pkcs11:token=ci" | tee "$T/all"
grep -q "Label: ec" "$T/all"
grep -q "Type: Private key" "$T/all"

step "OpenSSL + libengine-pkcs11-openssl: self-signed certificate with the token's EC key"
cat > "$T/openssl.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $engine
MODULE_PATH = $M
init = 0
[req]
distinguished_name = dn
[dn]
EOF
for key in ec rsa; do
  OPENSSL_CONF=$T/openssl.cnf openssl req -new -x509 -days 2 -sha256 -engine pkcs11 -keyform engine \
    -key "pkcs11:token=ci;object=$key;type=private;pin-value=$PIN" \
    -subj "/CN=bulwark-$key" -out "$T/$key.crt"
  # Plain openssl (no engine): the certificate's signature must verify under its own key, and
  # that key must be the token's public key.
  openssl verify -CAfile "$T/$key.crt" "$T/$key.crt"
  openssl x509 -in "$T/$key.crt" -noout -pubkey > "$T/$key.crt.pub"
  cmp <(openssl pkey -pubin -in "$T/$key.crt.pub" -outform DER) "$T/$key.pub.der"
  openssl x509 -in "$T/$key.crt" -noout -subject
done

step "Python (PyKCS11): error codes and 4 threads signing on separate sessions"
# Debian's python3-pykcs11 lives in the system interpreter, not in a venv or pyenv.
/usr/bin/python3 scripts/pkcs11-python.py "$M" ci "$PIN"

step "token objects persist and are visible to another process"
p11 --login --pin "$PIN" -O | tee "$T/O"
grep -q "label:      ec" "$T/O"
grep -q "label:      aes" "$T/O"

echo
echo "pkcs11-clients: all client checks passed"
