#!/usr/bin/env bash
# The applications people already use, against libbulwark_pkcs11.so, on an embedded slot and on
# a remote slot (a `bulwarkd --dev` this script starts on a loopback port):
#
#   OpenSSL 3 + pkcs11-provider  root CA and CRLs, s_server/s_client TLS 1.3 (ECDSA and RSA-PSS
#                                server keys, client authentication), CMS decryption to RSA and
#                                EC certificates with OpenSSL's default algorithms
#   NSS                          modutil, certutil (lists the token, generates a key pair in it and
#                                self-signs), cmsutil -D of an `openssl cms -encrypt` envelope
#   OpenSC pkcs11-tool           --test with no errors, --wrap/--unwrap (AES key wrap with and
#                                without padding, RSA PKCS#1 v1.5) against OpenSSL's results
#   Java SunPKCS11               keytool -list/-genkeypair, jarsigner sign and verify
#   OpenSSH                      ssh-keygen -D, ssh-add -s into a test agent, signing by the agent
#   GnuTLS certtool              self-signed certificates whose keys are PKCS#11 URLs
#
# Every signature and ciphertext is checked by an independent implementation (plain openssl,
# ssh-keygen, jarsigner). Each check runs on its own; a failing check prints its log and the
# script exits non-zero at the end. A check listed as PENDING below waits for a module feature
# (issue 13) that is not in yet: it still runs, and the summary says whether it failed as
# expected or now passes (then drop it from the list).
#
# Usage: scripts/pkcs11-clients-apps.sh [path/to/libbulwark_pkcs11.so [path/to/bulwarkd]]
# Without arguments it builds both (debug). Installs its clients with apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD

# Checks that need a module feature not landed yet: "name|what is missing|regex". Such a check
# counts as PENDING only when it fails AND its log matches the regex (the failure it is waiting
# for); any other failure is a FAILED check like every other.
# (None today: every check of issue 13 passes on both targets.)
PENDING_CHECKS=()

# ---------------------------------------------------------------- tools
need=()
command -v pkcs11-tool >/dev/null || need+=(opensc)
ls /usr/lib/*/pkcs11/pkcs11-spy.so >/dev/null 2>&1 || need+=(opensc-pkcs11)
command -v certtool >/dev/null || need+=(gnutls-bin)
command -v p11tool >/dev/null || need+=(gnutls-bin)
command -v certutil >/dev/null || need+=(libnss3-tools)
command -v ssh-agent >/dev/null || need+=(openssh-client)
command -v jarsigner >/dev/null || need+=(default-jdk-headless)
command -v openssl >/dev/null || need+=(openssl)
command -v xxd >/dev/null || need+=(xxd)
ossl_modules=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"/\1/p')
[ -f "$ossl_modules/pkcs11.so" ] || need+=(pkcs11-provider)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "missing packages: ${need[*]} (install them, or run as root)" >&2; exit 1; }
  # Debian 12 ships pkcs11-provider in bookworm-backports only (Debian 13 has it in main).
  if [[ " ${need[*]} " == *" pkcs11-provider "* ]] && . /etc/os-release && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/bulwark-backports.list
    need=("${need[@]/#pkcs11-provider/pkcs11-provider/bookworm-backports}")
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -f "$ossl_modules/pkcs11.so" ] || { echo "pkcs11-provider not found in $ossl_modules" >&2; exit 1; }

if [ $# -ge 1 ]; then
  M=$(realpath "$1")
  BULWARKD=$(realpath "${2:-$(dirname "$M")/bulwarkd}")
else
  cargo build -q --locked -p bulwark-pkcs11 -p bulwarkd
  M=${CARGO_TARGET_DIR:-$here/target}/debug/libbulwark_pkcs11.so
  BULWARKD=${CARGO_TARGET_DIR:-$here/target}/debug/bulwarkd
fi
[ -f "$M" ] || { echo "module not found: $M" >&2; exit 1; }
[ -x "$BULWARKD" ] || { echo "bulwarkd not found: $BULWARKD" >&2; exit 1; }

T=$(mktemp -d /tmp/bulwark-apps.XXXXXX)
daemon_pid='' agent_pid=''
cleanup() {
  [ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null || true
  [ -z "$daemon_pid" ] || { kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; } || true
  rm -rf "$T"
}
trap cleanup EXIT
unset OPENSSL_CONF SSH_AUTH_SOCK
export OPENSC_CONF=/dev/null

# ---------------------------------------------------------------- check harness
results=()
pending_field() { # NAME FIELD(2 = reason, 3 = regex)
  local p
  for p in "${PENDING_CHECKS[@]}"; do
    if [ "${p%%|*}" = "$1" ]; then echo "$p" | cut -d'|' -f"$2"; fi
  done
}
# check NAME FUNCTION: runs FUNCTION in a subshell with errexit (not in a conditional context, so
# errexit holds in every command it runs), output to a log shown when it fails.
check() {
  local name=$1 fn=$2 log=$T/logs/$target-$1.log rc reason
  mkdir -p "$T/logs"
  printf -- '-- %-8s %-34s ' "$target" "$name"
  set +e
  ( set -e; cd "$W"; "$fn" ) > "$log" 2>&1
  rc=$?
  set -e
  reason=$(pending_field "$name" 2)
  if [ $rc = 0 ] && [ -z "$reason" ]; then
    echo ok; results+=("PASS     $target $name")
  elif [ $rc = 0 ]; then
    echo "ok (listed as pending: drop it from PENDING_CHECKS)"; results+=("PASS     $target $name (was pending)")
  elif [ -n "$reason" ] && grep -Eq "$(pending_field "$name" 3)" "$log"; then
    echo "PENDING: $reason"; results+=("PENDING  $target $name: $reason")
    tail -n 4 "$log" | sed 's/^/     | /'
  else
    echo "FAILED (exit $rc)"; results+=("FAILED   $target $name")
    tail -n 40 "$log" | sed 's/^/     | /'
  fi
}
must_fail() { if "$@"; then echo "unexpectedly succeeded: $*" >&2; return 1; fi; }
# The bulwark CLI as the dev daemon's security officer (remote target only).
so_cli() { (set -a; . "$T/dev/so.env"; "$(dirname "$BULWARKD")/bulwark" "$@"); }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- per-target setup
# Sets W (work dir), TOKEN, PIN and BULWARK_PKCS11_CONF, initializes the token (embedded) and
# makes the keys every check uses: EC P-256 "ca" (01), RSA-2048 "rsa" (02), EC P-256 "ec" (03),
# RSA-2048 "wrap" (85, wrap/unwrap), AES-256 "kek" (a2, wrap/unwrap) and an extractable AES-256
# "payload" (a1).
p11() { pkcs11-tool --module "$M" "$@"; }
p11u() { pkcs11-tool --module "$M" --token-label "$TOKEN" --login --pin "$PIN" "$@"; }
setup_target() {
  W=$T/$target
  mkdir -p "$W"
  case $target in
  embedded)
    printf '[[slot]]\nlabel = "apps"\nstore = "%s/token.db"\n' "$W" > "$W/pkcs11.toml"
    export BULWARK_PKCS11_CONF=$W/pkcs11.toml
    TOKEN=apps PIN=123456
    p11 --init-token --label "$TOKEN" --so-pin 87654321 >/dev/null
    p11 --token-label "$TOKEN" --init-pin --login --so-pin 87654321 --pin "$PIN" >/dev/null
    ;;
  remote)
    local dev=$T/dev
    "$BULWARKD" --dev --dir "$dev" --listen 127.0.0.1:0 > "$T/bulwarkd.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 300); do
      grep -q 'listening on' "$T/bulwarkd.log" 2>/dev/null && break
      kill -0 "$daemon_pid" 2>/dev/null || { cat "$T/bulwarkd.log"; echo "bulwarkd --dev died" >&2; exit 1; }
      sleep 0.2
    done
    grep -q 'listening on' "$T/bulwarkd.log" || { cat "$T/bulwarkd.log"; echo "bulwarkd --dev did not start" >&2; exit 1; }
    # shellcheck disable=SC1091
    local endpoint password
    endpoint=$(. "$dev/officer.env" && echo "$BULWARK_ENDPOINT")
    password=$(. "$dev/officer.env" && echo "$BULWARK_PASSWORD")
    cat > "$W/pkcs11.toml" <<EOF
[[slot]]
label = "hsm"
endpoint = "$endpoint"
ca_cert = "$dev/pki/ca.pem"
client_cert = "$dev/pki/crypto.pem"
client_key = "$dev/pki/crypto-key.pem"
EOF
    export BULWARK_PKCS11_CONF=$W/pkcs11.toml
    PIN="crypto:$password"
    TOKEN=$(p11 -L | sed -n 's/^ *token label *: *//p' | head -1 | sed 's/ *$//')
    [ -n "$TOKEN" ] || { p11 -L; echo "remote slot shows no token" >&2; exit 1; }
    ;;
  esac
  printf '%s' "$PIN" > "$W/pin"
  # pkcs11-provider 1.0 reads at most 31 bytes from a `file:` PIN source (a longer PIN reaches
  # C_Login cut short: CKR_PIN_INCORRECT), so a remote slot's "user:password" goes in the file.
  local pin_source=file:$W/pin
  [ ${#PIN} -le 31 ] || pin_source=$PIN
  p11u --keypairgen --key-type EC:prime256v1 --id 01 --label ca >/dev/null
  p11u --keypairgen --key-type rsa:2048 --id 02 --label rsa >/dev/null
  p11u --keypairgen --key-type EC:prime256v1 --id 03 --label ec >/dev/null
  p11u --keypairgen --key-type rsa:2048 --id 85 --label wrap --usage-wrap --usage-decrypt >/dev/null
  head -c 32 /dev/urandom > "$W/kek.key"
  head -c 32 /dev/urandom > "$W/payload.key"
  p11u --write-object "$W/kek.key" --type secrkey --key-type AES:32 --id a2 --label kek --usage-wrap >/dev/null
  p11u --write-object "$W/payload.key" --type secrkey --key-type AES:32 --id a1 --label payload \
    --usage-decrypt --extractable >/dev/null
  # Public keys as SubjectPublicKeyInfo PEM, exported by GnuTLS (an independent reader).
  local k
  for k in ca rsa ec wrap; do
    GNUTLS_PIN=$PIN p11tool --provider "$M" --export-pubkey "pkcs11:token=$TOKEN;object=$k;type=public" \
      > "$W/$k.pub.pem" 2>/dev/null
    openssl pkey -pubin -in "$W/$k.pub.pem" -noout
  done
  cat > "$W/provider.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
module = $ossl_modules/pkcs11.so
pkcs11-module-path = $M
pkcs11-module-token-pin = $pin_source
activate = 1
EOF
  chmod 0600 "$W/provider.cnf"
}
ossl() { OPENSSL_CONF=$W/provider.cnf openssl "$@"; }
key() { echo "pkcs11:token=$TOKEN;object=$1;type=private"; }

# ---------------------------------------------------------------- OpenSSL 3 + pkcs11-provider
c_openssl_ca_crl() {
  ossl req -new -x509 -days 30 -sha256 -key "$(key ca)" -subj "/CN=Bulwark test root CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.pem
  # The root's key is the token's "ca" key, and the self-signature verifies.
  cmp <(openssl x509 -in ca.pem -noout -pubkey | openssl pkey -pubin -outform DER) \
      <(openssl pkey -pubin -in ca.pub.pem -outform DER)
  openssl verify -CAfile ca.pem ca.pem
  for k in rsa ec; do
    ossl req -new -key "$(key $k)" -subj /CN=localhost -out $k.csr
    ossl x509 -req -in $k.csr -CA ca.pem -CAkey "$(key ca)" -CAcreateserial -days 7 -sha256 \
      -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature,keyEncipherment,keyAgreement\nextendedKeyUsage=serverAuth,clientAuth\n') \
      -out $k.pem
    openssl verify -CAfile ca.pem $k.pem
  done
  mkdir -p db && : > db/index.txt && echo 1000 > db/crlnumber
  printf '[ca]\ndefault_ca = bw\n[bw]\ndatabase = %s/db/index.txt\ncrlnumber = %s/db/crlnumber\ndefault_md = sha256\ndefault_crl_days = 7\n' \
    "$PWD" "$PWD" > ca.cnf
  ossl ca -config ca.cnf -gencrl -keyfile "$(key ca)" -cert ca.pem -out crl0.pem
  openssl verify -crl_check -CAfile ca.pem -CRLfile crl0.pem rsa.pem
  # A throw-away leaf, revoked: the new CRL (signed in the token) must make it fail.
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=revoked -out leaf.csr
  ossl x509 -req -in leaf.csr -CA ca.pem -CAkey "$(key ca)" -CAcreateserial -days 7 -out leaf.pem
  ossl ca -config ca.cnf -revoke leaf.pem -keyfile "$(key ca)" -cert ca.pem
  ossl ca -config ca.cnf -gencrl -keyfile "$(key ca)" -cert ca.pem -out crl1.pem
  openssl crl -in crl1.pem -CAfile ca.pem -noout
  must_fail openssl verify -crl_check -CAfile ca.pem -CRLfile crl1.pem leaf.pem
  openssl verify -crl_check -CAfile ca.pem -CRLfile crl1.pem rsa.pem
}

tls_handshake() { # KEY-NAME [client-auth]
  local k=$1 port log=tls-$1-${2:-plain}.log
  port=$(free_port)
  local sargs=(-accept "127.0.0.1:$port" -key "$(key "$k")" -cert "$k.pem" -naccept 1 -www)
  local cargs=(-connect "127.0.0.1:$port" -CAfile ca.pem -verify_return_error -verify_hostname localhost)
  if [ -n "${2:-}" ]; then
    # The client's key is in the token too (the other one), the server requires a certificate.
    sargs+=(-Verify 1 -verify_return_error -CAfile ca.pem)
    local other=ec; [ "$k" = ec ] && other=rsa
    cargs+=(-key "$(key $other)" -cert "$other.pem")
  fi
  # Bounded: a client that never connects must not leave the check waiting for ever.
  timeout 90 env OPENSSL_CONF="$W/provider.cnf" openssl s_server "${sargs[@]}" > "$log" 2>&1 &
  local spid=$!
  for _ in $(seq 1 100); do grep -q '^ACCEPT' "$log" && break; sleep 0.1; done
  if [ -n "${2:-}" ]; then
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 env OPENSSL_CONF="$W/provider.cnf" openssl s_client "${cargs[@]}" -ign_eof > client.out 2>&1
  else
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 openssl s_client "${cargs[@]}" -ign_eof > client.out 2>&1
  fi
  wait "$spid"
  grep -E 'New, TLS|Peer signature type|Verification|Verify return code|Client certificate|error' client.out | sort -u
  grep -q 'Verification: OK\|Verify return code: 0 (ok)' client.out
  grep -q 'New, TLSv1.3' client.out
  grep -q 's_server' client.out   # the -www page came through the encrypted channel
}
c_openssl_tls() {
  tls_handshake ec
  grep -q 'Peer signature type: ECDSA' client.out
  tls_handshake rsa
  grep -q 'Peer signature type: RSA-PSS' client.out
  tls_handshake ec client-auth
  # The -www page lists the certificate the client presented: the token's RSA key's.
  sed -n '/^Client certificate/,/END CERTIFICATE/p' client.out | sed 1d > client-seen.pem
  cmp <(openssl x509 -in client-seen.pem -outform DER) <(openssl x509 -in rsa.pem -outform DER)
}

cms_decrypt() { # KEY-NAME
  head -c 3000 /dev/urandom > cms-$1.plain
  openssl cms -encrypt -binary -in cms-$1.plain -recip "$1.pem" -out cms-$1.der -outform DER
  openssl cms -cmsout -inform DER -in cms-$1.der -print | grep -E 'keyEncryptionAlgorithm|algorithm:' | head -5
  # The provider's debug log names the PKCS#11 call that failed, if one does.
  PKCS11_PROVIDER_DEBUG=file:$PWD/cms-$1.debug,level:2 \
    ossl cms -decrypt -binary -inform DER -in cms-$1.der -recip "$1.pem" -inkey "$(key "$1")" \
      -out cms-$1.out || { grep 'returned by C_' cms-$1.debug | sort -u; return 1; }
  cmp cms-$1.plain cms-$1.out
}
c_openssl_cms_rsa() { cms_decrypt rsa; }
c_openssl_cms_ec() { cms_decrypt ec; }

# ---------------------------------------------------------------- NSS
nss_setup() {
  [ -d nss ] && return 0
  mkdir nss
  certutil -N -d sql:nss --empty-password
  modutil -dbdir sql:nss -add bulwark -libfile "$M" -force
}
c_nss_list() {
  nss_setup
  modutil -dbdir sql:nss -list bulwark | tee modutil.out
  grep -q "Token Name: $TOKEN" modutil.out
  certutil -U -d sql:nss | tee tokens.out
  grep -q "token: $TOKEN" tokens.out
  certutil -K -d sql:nss -h "$TOKEN" -f pin | tee keys.out
  for k in ca rsa ec; do grep -q " $k\$" keys.out; done
}
c_nss_certutil_keygen() {
  nss_setup
  head -c 2048 /dev/urandom > noise
  # NSS generates the key pair in the token and signs the certificate there.
  certutil -S -d sql:nss -h "$TOKEN" -f pin -z noise -k ec -q nistp256 -n nsscert \
    -s "CN=NSS key in Bulwark" -x -t "CT,C,C" -v 12 --keyUsage digitalSignature,certSigning
  certutil -L -d sql:nss -h "$TOKEN" -f pin -n "$TOKEN:nsscert" -a > nsscert.pem
  openssl verify -CAfile nsscert.pem nsscert.pem
  certutil -K -d sql:nss -h "$TOKEN" -f pin | grep -q nsscert
}
c_nss_cmsutil_decrypt() {
  nss_setup
  # NSS pairs a private key with the certificate object of the same CKA_ID in the token.
  openssl x509 -in rsa.pem -outform DER -out rsa.der
  p11u --write-object rsa.der --type cert --id 02 --label rsa >/dev/null
  certutil -L -d sql:nss -h "$TOKEN" -f pin | grep -q "$TOKEN:rsa"
  nss_envelopes
}
# A short text and a longer binary message, enveloped by OpenSSL with CIPHER (its default, or
# what S/MIME mailers use), decrypted by NSS with the recipient key in the token.
nss_envelopes() { # [openssl cipher option]
  printf 'Short S/MIME text.\n' > nss-short.plain
  head -c 3000 /dev/urandom > nss-long.plain
  for m in short long; do
    openssl cms -encrypt -binary ${1:-} -in nss-$m.plain -recip rsa.pem -out nss-$m.p7m -outform DER
    openssl cms -cmsout -inform DER -in nss-$m.p7m -print | grep -A1 contentEncryptionAlgorithm | tail -1
    cmsutil -D -d sql:nss -f pin -i nss-$m.p7m -o nss-$m.out
    cmp nss-$m.plain nss-$m.out
  done
}
c_nss_cmsutil_decrypt_aes() {
  # AES-256-CBC: NSS unwraps the content key into the token and decrypts with CKM_AES_CBC_PAD
  # there, stopping at the last C_DecryptUpdate.
  nss_envelopes -aes-256-cbc
}

# ---------------------------------------------------------------- OpenSC pkcs11-tool
c_pkcs11_tool_test() {
  p11u --test > test.log 2>&1 || true
  cat test.log
  if ! grep -q '^No errors' test.log; then
    local errors raw
    errors=$(grep -Eo '^[0-9]+ errors' test.log | grep -Eo '^[0-9]+' || echo unknown)
    raw=$(grep -c 'RSA-PKCS: *ERR: C_Sign() returned CKR_DATA_LEN_RANGE' test.log || true)
    [ "$errors" != "$raw" ] || echo "only raw RSA-PKCS errors: $raw"
    return 1
  fi
  ! grep -q 'ERR' test.log
}
c_pkcs11_tool_wrap_aes() {
  local K
  K=$(xxd -p -c 64 kek.key)
  # AES key wrap (RFC 3394): the token's result equals OpenSSL's, and OpenSSL's unwraps.
  openssl enc -id-aes256-wrap -e -K "$K" -iv a6a6a6a6a6a6a6a6 -in payload.key -out kw.ossl
  openssl enc -id-aes256-wrap-pad -e -K "$K" -iv a65959a6 -in payload.key -out kwp.ossl
  if [ "$target" = remote ]; then
    # A daemon store lets keys leave only under a CKA_TRUSTED key, which only the security
    # officer sets: refused first, then allowed once the SO trusts the KEK.
    must_fail p11u --wrap -m AES-KEY-WRAP --id a2 --application-id a1 -o kw.p11
    so_cli trust kek
  fi
  p11u --wrap -m AES-KEY-WRAP --id a2 --application-id a1 -o kw.p11
  cmp kw.p11 kw.ossl
  # With padding (RFC 5649, CKM_AES_KEY_WRAP_KWP: pkcs11-tool 0.23 has no name for it).
  p11u --wrap -m 0x210B --id a2 --application-id a1 -o kwp.p11
  cmp kwp.p11 kwp.ossl
  unwrap_and_compare AES-KEY-WRAP kw.ossl b1 unwrapped-kw payload.key
  unwrap_and_compare 0x210B kwp.ossl b2 unwrapped-kwp payload.key
  # A tampered blob is refused.
  printf '\x01' | dd of=kw.ossl bs=1 seek=3 conv=notrunc 2>/dev/null
  must_fail p11u --unwrap -m AES-KEY-WRAP --id a2 -i kw.ossl --key-type AES: --application-id b3
}
# Unwraps BLOB with MECH under the KEK (a2) as object ID and checks it holds the bytes of KEYFILE:
# read back on an embedded slot (an extractable, non-sensitive key); on a daemon store, where
# unwrapped keys are always sensitive, by its AES-CBC output against OpenSSL's under the same key.
unwrap_and_compare() {
  local mech=$1 blob=$2 id=$3 label=$4 keyfile=$5
  if [ "$target" = remote ]; then
    must_fail p11u --unwrap -m "$mech" --id a2 -i "$blob" --key-type AES: --extractable \
      --application-id "$id" --application-label "$label"
    p11u --unwrap -m "$mech" --id a2 -i "$blob" --key-type AES: --sensitive \
      --application-id "$id" --application-label "$label"
    head -c 64 /dev/urandom > "$id.blocks"
    p11u --encrypt -m AES-CBC --id "$id" --iv 000102030405060708090a0b0c0d0e0f -i "$id.blocks" -o "$id.p11"
    openssl enc -aes-256-cbc -nopad -K "$(xxd -p -c 64 "$keyfile")" \
      -iv 000102030405060708090a0b0c0d0e0f -in "$id.blocks" -out "$id.ossl"
    cmp "$id.p11" "$id.ossl"
  else
    p11u --unwrap -m "$mech" --id a2 -i "$blob" --key-type AES: --extractable \
      --application-id "$id" --application-label "$label"
    p11u --read-object --type secrkey --id "$id" -o "$id.back"
    cmp "$id.back" "$keyfile"
  fi
}
c_pkcs11_tool_unwrap_rsa() {
  # OpenSSL wraps an AES key to the token's RSA key (PKCS#1 v1.5); the token unwraps it and
  # its AES-CBC result equals OpenSSL's under the same key.
  head -c 32 /dev/urandom > rsa-payload.key
  openssl pkeyutl -encrypt -pubin -inkey wrap.pub.pem -in rsa-payload.key -out rsa-payload.wrapped
  local extractable=--extractable
  # A daemon store keeps unwrapped keys sensitive: CKA_SENSITIVE=false (pkcs11-tool's default
  # without --sensitive) is refused there.
  [ "$target" != remote ] || extractable=--sensitive
  p11u --unwrap -m RSA-PKCS --id 85 -i rsa-payload.wrapped --key-type AES: $extractable \
    --application-id c1 --application-label unwrapped-rsa
  head -c 64 /dev/urandom > blocks
  p11u --encrypt -m AES-CBC --id c1 --iv 000102030405060708090a0b0c0d0e0f -i blocks -o blocks.p11
  openssl enc -aes-256-cbc -nopad -K "$(xxd -p -c 64 rsa-payload.key)" \
    -iv 000102030405060708090a0b0c0d0e0f -in blocks -out blocks.ossl
  cmp blocks.p11 blocks.ossl
}
c_pkcs11_tool_wrap_rsa() {
  # The extractable AES key wrapped under the RSA public key (PKCS#1 v1.5); the private key
  # (in the token, C_Decrypt) must give back the key's bytes.
  if [ "$target" = remote ]; then
    must_fail p11u --wrap -m RSA-PKCS --id 85 --application-id a1 -o rsa-wrapped
    so_cli trust wrap
  fi
  p11u --wrap -m RSA-PKCS --id 85 --application-id a1 -o rsa-wrapped
  [ "$(stat -c %s rsa-wrapped)" = 256 ]
  p11u --decrypt -m RSA-PKCS --id 85 -i rsa-wrapped -o rsa-wrapped.plain
  cmp rsa-wrapped.plain payload.key
}

# ---------------------------------------------------------------- Java SunPKCS11
java_setup() {
  printf 'name = Bulwark\nlibrary = %s\nslotListIndex = 0\n' "$M" > java.cfg
  KT=(-keystore NONE -storetype PKCS11 -providerClass sun.security.pkcs11.SunPKCS11
      -providerArg "$PWD/java.cfg" -storepass "$PIN")
}
c_java_keytool() {
  java_setup
  keytool -genkeypair "${KT[@]}" -alias jsign -keyalg EC -groupname secp256r1 -sigalg SHA256withECDSA \
    -dname "CN=jarsigner in Bulwark" -validity 30
  keytool -list "${KT[@]}" | tee keytool.out
  grep -q '^jsign, PrivateKeyEntry' keytool.out
  keytool -exportcert "${KT[@]}" -alias jsign -rfc -file jsign.pem
  openssl verify -CAfile jsign.pem jsign.pem
}
c_java_jarsigner() {
  java_setup
  mkdir -p jar/com/example && echo 'hello from a signed jar' > jar/com/example/hello.txt
  (cd jar && jar cf ../app.jar com)
  jarsigner "${KT[@]}" -sigalg SHA256withECDSA -signedjar app-signed.jar app.jar jsign
  # Verified against a trust store holding only the token's certificate.
  rm -f trust.p12
  keytool -importcert -noprompt -alias jsign -file jsign.pem -keystore trust.p12 -storetype PKCS12 -storepass trustpw
  jarsigner -verify -strict -keystore trust.p12 -storetype PKCS12 -storepass trustpw app-signed.jar jsign | tee verify.out
  grep -q 'jar verified' verify.out
  # The signature block, checked by OpenSSL too.
  mkdir -p x && (cd x && jar xf ../app-signed.jar META-INF)
  openssl cms -verify -inform DER -in x/META-INF/JSIGN.EC -content x/META-INF/JSIGN.SF -binary \
    -CAfile jsign.pem -purpose any -out /dev/null
  # A changed entry is caught.
  cp app-signed.jar tampered.jar
  (cd jar && echo 'changed' > com/example/hello.txt && jar uf ../tampered.jar com/example/hello.txt)
  must_fail jarsigner -verify -strict -keystore trust.p12 -storetype PKCS12 -storepass trustpw tampered.jar jsign
}

# ---------------------------------------------------------------- OpenSSH
c_ssh_keygen_d() {
  ssh-keygen -D "$M" > ssh-keys.pub
  cat ssh-keys.pub
  for k in rsa ec; do
    ssh-keygen -i -m PKCS8 -f $k.pub.pem > $k.ssh.pub
    grep -qF "$(cut -d' ' -f1,2 $k.ssh.pub)" ssh-keys.pub
  done
}
c_ssh_agent() {
  # An agent of our own, allowed to load this module only.
  eval "$(ssh-agent -s -P "$M")" > /dev/null
  echo "$SSH_AGENT_PID" > agent.pid
  printf '#!/bin/sh\ncat %s/pin\n' "$PWD" > askpass && chmod 0700 askpass
  SSH_ASKPASS=$PWD/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=none ssh-add -s "$M" < /dev/null
  ssh-add -L | tee agent.keys
  echo 'data signed by the agent' > msg
  local rc=0
  for k in ec rsa; do
    ssh-keygen -i -m PKCS8 -f $k.pub.pem > $k.ssh.pub
    grep -qF "$(cut -d' ' -f1,2 $k.ssh.pub)" agent.keys || { rc=1; break; }
    rm -f msg.sig
    ssh-keygen -Y sign -f $k.ssh.pub -n file msg || { rc=1; break; }
    echo "tester $(cat $k.ssh.pub)" > allowed
    ssh-keygen -Y verify -f allowed -I tester -n file -s msg.sig < msg || { rc=1; break; }
    # Without the agent there is no private key to sign with.
    (unset SSH_AUTH_SOCK; must_fail ssh-keygen -Y sign -f $k.ssh.pub -n file msg 2>/dev/null < /dev/null) || { rc=1; break; }
  done
  ssh-add -e "$M" || rc=1
  kill "$SSH_AGENT_PID"
  return $rc
}

# ---------------------------------------------------------------- GnuTLS certtool
c_certtool() {
  printf 'cn = "certtool key in Bulwark"\nexpiration_days = 30\nsigning_key\ncert_signing_key\nca\n' > cert.tmpl
  for k in ec rsa; do
    GNUTLS_PIN=$PIN certtool --provider "$M" --generate-self-signed \
      --load-privkey "pkcs11:token=$TOKEN;object=$k;type=private" \
      --load-pubkey "pkcs11:token=$TOKEN;object=$k;type=public" \
      --template cert.tmpl --outfile certtool-$k.pem
    openssl verify -CAfile certtool-$k.pem certtool-$k.pem
    cmp <(openssl x509 -in certtool-$k.pem -noout -pubkey | openssl pkey -pubin -outform DER) \
        <(openssl pkey -pubin -in $k.pub.pem -outform DER)
  done
}

# ---------------------------------------------------------------- run
for target in embedded remote; do
  printf '\n== %s slot\n' "$target"
  setup_target
  check openssl-ca-crl c_openssl_ca_crl
  check openssl-tls c_openssl_tls
  check openssl-cms-decrypt-rsa c_openssl_cms_rsa
  check openssl-cms-decrypt-ec c_openssl_cms_ec
  check nss-list c_nss_list
  check nss-certutil-keygen c_nss_certutil_keygen
  check nss-cmsutil-decrypt c_nss_cmsutil_decrypt
  check nss-cmsutil-decrypt-aes c_nss_cmsutil_decrypt_aes
  check pkcs11-tool-test c_pkcs11_tool_test
  check pkcs11-tool-wrap-aes c_pkcs11_tool_wrap_aes
  check pkcs11-tool-unwrap-rsa c_pkcs11_tool_unwrap_rsa
  check pkcs11-tool-wrap-rsa c_pkcs11_tool_wrap_rsa
  check java-keytool c_java_keytool
  check java-jarsigner c_java_jarsigner
  if [ "$target" = remote ]; then
    # ssh-keygen -D never logs in, and a remote slot shows no object before C_Login (the daemon
    # serves nothing to an anonymous client: docs/pkcs11.md). ssh-add -s below logs in.
    printf -- '-- %-8s %-34s n/a: no login in ssh-keygen -D, no objects before login on a remote slot\n' "$target" ssh-keygen-D
    results+=("N/A      $target ssh-keygen-D: remote slots show no object before login")
  else
    check ssh-keygen-D c_ssh_keygen_d
  fi
  check ssh-agent c_ssh_agent
  [ ! -f "$W/agent.pid" ] || { kill "$(cat "$W/agent.pid")" 2>/dev/null || true; }
  check gnutls-certtool c_certtool
done

echo
echo "== summary"
printf '%s\n' "${results[@]}"
failed=$(printf '%s\n' "${results[@]}" | grep -c '^FAILED' || true)
pending=$(printf '%s\n' "${results[@]}" | grep -c '^PENDING' || true)
passed=$(printf '%s\n' "${results[@]}" | grep -c '^PASS' || true)
echo "pkcs11-clients-apps: $pending pending (waiting for module features, listed above)"
echo "pkcs11-clients-apps: $passed passed, $failed failed"
[ "$failed" = 0 ] || { echo "pkcs11-clients-apps: FAILED checks above (logs printed with each)" >&2; exit 1; }
