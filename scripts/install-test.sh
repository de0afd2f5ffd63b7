#!/usr/bin/env bash
# Installs Bulwark into a fresh root and uses it as a user would, with no configuration at all:
#
#  1. scripts/install.sh --destdir ROOT: the exact file list; the systemd unit passes
#     `systemd-analyze verify` and `systemd-analyze security` (exposure at most 2.0).
#  2. ROOT laid over the system in a private mount namespace (overlayfs, read-only; the host is
#     not touched): `p11-kit list-modules` shows the module, and pkcs11-tool drives the token
#     through p11-kit-proxy.so (slot list, C_InitToken, C_InitPIN, EC key generation, ECDSA
#     signature verified by plain openssl against the public key GnuTLS exports through
#     p11-kit), with the store in the user's data directory; a second user gets a token of its
#     own; OpenSSL's pkcs11-provider signs through the proxy; the CLI and the daemon run from
#     their installed paths.
#  3. install.sh for real (no --destdir) in a throw-away writable overlay: the system user, the
#     p11-kit registration, and an edited pkcs11.toml kept on reinstall.
#  4. scripts/build-deb.sh: the same files; `dpkg -i` in a throw-away writable overlay creates
#     the `bulwark` user and registers the module with p11-kit; `dpkg -r` unregisters it and
#     keeps the configuration; `dpkg -P` removes that too.
#
# Usage: scripts/install-test.sh [DIR with bulwark, bulwarkd, libbulwark_pkcs11.so]
# Without an argument it builds them (debug). Needs root (mount namespaces); installs its tools
# with apt when missing. Any failure stops it with a non-zero exit and a message.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
step() { printf '\n== %s\n' "$*"; }
fail() { echo "install-test: FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------- inside the mount namespace
if [ "${1:-}" = --inside ]; then
  mode=$2 T=${3:?}
  root=$T/root
  multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
  proxy=/usr/lib/$multiarch/p11-kit-proxy.so
  export OPENSC_CONF=/dev/null  # opensc-pkcs11.module (also registered) then stays quiet
  # A user with nothing configured: no BULWARK_PKCS11_CONF, no XDG variables, an empty home.
  as_user() { # HOME-NAME command...
    local home=$T/home-$1; shift
    mkdir -p "$home"
    env -u BULWARK_PKCS11_CONF -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_RUNTIME_DIR \
      HOME="$home" "$@"
  }
  case $mode in
  destdir)
    # usr-merged hosts: ROOT/lib is /usr/lib.
    if [ -L /lib ] && [ -d "$root/lib" ]; then
      cp -a "$root/lib/." "$root/usr/lib/"
      rm -rf "${root:?}/lib"
    fi
    mount -t overlay bulwark-usr -o "lowerdir=$root/usr:/usr" /usr
    mount -t overlay bulwark-etc -o "lowerdir=$root/etc:/etc" /etc
    # Only the modules this test installs (Bulwark) or brings in (p11-kit-trust, OpenSC) stay
    # registered with p11-kit: the proxy loads every registered module into each process, and
    # another package's module is not under test (SoftHSMv2 2.6, when the host has it, crashes
    # in its own C_Finalize when OpenSSL unloads pkcs11-provider at exit).
    mods=/usr/share/p11-kit/modules
    mkdir -p "$T/p11-kit-modules"
    for f in "$mods"/*.module; do
      case ${f##*/} in
        bulwark.module|p11-kit-trust.module|opensc-pkcs11.module) cp "$f" "$T/p11-kit-modules/" ;;
        *) echo "(hidden from p11-kit for this test: $f)" ;;
      esac
    done
    mount --bind "$T/p11-kit-modules" "$mods"

    step "systemd unit: systemd-analyze verify and security (offline)"
    unit=/lib/systemd/system/bulwarkd.service
    systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
    systemd-analyze security --offline=yes --threshold=20 "$unit" > "$T/security.txt" \
      || { cat "$T/security.txt"; fail "bulwarkd.service exposure above 2.0"; }
    tail -1 "$T/security.txt"
    for want in 'User=bulwark' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'PrivateTmp=yes' \
        'MemoryDenyWriteExecute=yes' 'LimitCORE=0' 'StateDirectory=bulwark' \
        'ExecStart=/usr/sbin/bulwarkd --config /etc/bulwark/bulwarkd.toml'; do
      grep -qx "$want" "$unit" || fail "$unit lacks $want"
    done
    grep -qx 'CapabilityBoundingSet=' "$unit" || fail "$unit keeps capabilities"

    step "installed CLI and daemon run"
    /usr/bin/bulwark --version
    /usr/sbin/bulwarkd --version

    step "p11-kit list-modules sees the Bulwark module and its token (no configuration)"
    as_user alice p11-kit list-modules > "$T/modules" 2>&1 || { cat "$T/modules"; fail "p11-kit list-modules"; }
    sed -n '/^bulwark:/,/^[^ ]/p' "$T/modules"
    grep -q "^bulwark: /usr/lib/$multiarch/pkcs11/libbulwark_pkcs11.so" "$T/modules" \
      || fail "p11-kit does not list the bulwark module"
    sed -n '/^bulwark:/,/^[^ ]/p' "$T/modules" | grep -q 'token: bulwark' \
      || fail "p11-kit shows no Bulwark token"

    step "pkcs11-tool through p11-kit-proxy.so: slot list"
    p11() { as_user alice pkcs11-tool --module "$proxy" "$@"; }
    p11 -L | tee "$T/L0"
    grep -A1 'Bulwark slot 0: .*/home-alice/' "$T/L0" | grep -q 'token state: *uninitialized' \
      || fail "no uninitialized Bulwark token (store in alice's home) through the proxy"

    step "pkcs11-tool through p11-kit-proxy.so: init token and PIN, EC key, ECDSA signature"
    p11 --token-label bulwark --init-token --label alice --so-pin 87654321
    p11 --token-label alice --init-pin --login --so-pin 87654321 --pin 123456
    p11 --token-label alice --login --pin 123456 --keypairgen --key-type EC:prime256v1 \
      --id 01 --label k1
    head -c 4096 /dev/urandom > "$T/data"
    p11 --token-label alice --login --pin 123456 --sign --id 01 -m ECDSA-SHA256 \
      --signature-format openssl -i "$T/data" -o "$T/data.sig"
    # GnuTLS finds the token through p11-kit itself (no --provider).
    GNUTLS_PIN=123456 as_user alice p11tool --export-pubkey "pkcs11:token=alice;object=k1;type=public" > "$T/k1.pem"
    openssl dgst -sha256 -verify "$T/k1.pem" -signature "$T/data.sig" "$T/data" \
      || fail "openssl does not verify the token's signature"
    [ -f "$T/home-alice/.local/share/bulwark/token.db" ] \
      || fail "the store is not in the user's data directory"
    p11 -L | grep -q 'token label *: alice' || fail "initialized token not listed"

    step "OpenSSL's pkcs11-provider through p11-kit-proxy.so: a certificate signed in the token"
    ossl_modules=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"/\1/p')
    if [ -f "$ossl_modules/pkcs11.so" ]; then
      printf '%s\n' 'openssl_conf = init_sect' '[init_sect]' 'providers = providers_sect' \
        '[providers_sect]' 'default = default_sect' 'pkcs11 = pkcs11_sect' '[default_sect]' \
        'activate = 1' '[pkcs11_sect]' \
        "module = $ossl_modules/pkcs11.so" "pkcs11-module-path = $proxy" \
        'pkcs11-module-token-pin = 123456' 'activate = 1' > "$T/proxy.cnf"
      OPENSSL_CONF=$T/proxy.cnf as_user alice openssl req -new -x509 -days 1 -subj /CN=via-p11-kit \
        -key "pkcs11:token=alice;object=k1;type=private" -out "$T/proxy.crt" \
        || fail "openssl with pkcs11-provider cannot sign through p11-kit-proxy.so"
      openssl verify -CAfile "$T/proxy.crt" "$T/proxy.crt" || fail "the certificate made through the proxy does not verify"
      cmp <(openssl x509 -in "$T/proxy.crt" -noout -pubkey | openssl pkey -pubin -outform DER) \
          <(openssl pkey -pubin -in "$T/k1.pem" -outform DER) || fail "the proxy signed with another key"
    else
      fail "pkcs11-provider missing from $ossl_modules"
    fi

    step "another user gets a token of its own"
    as_user bob pkcs11-tool --module "$proxy" -L | tee "$T/L-bob"
    grep -A1 'Bulwark slot 0: .*/home-bob/' "$T/L-bob" | grep -q 'token state: *uninitialized' \
      || fail "bob should see his own uninitialized token"
    ;;
  real|deb)
    mkdir -p "$T/ovl"
    mount -t tmpfs bulwark-ovl "$T/ovl"
    for d in usr etc var; do
      mkdir -p "$T/ovl/$d-up" "$T/ovl/$d-work"
      mount -t overlay "bulwark-$d" -o "lowerdir=/$d,upperdir=$T/ovl/$d-up,workdir=$T/ovl/$d-work" "/$d"
    done
    # Keep install.sh and the maintainer scripts from asking the host's systemd to reload (it
    # would not see this overlay).
    if [ -d /run/systemd ]; then mount -t tmpfs bulwark-run-systemd /run/systemd; fi
    ;;&
  real)
    bin=$4
    step "install.sh without --destdir (in a throw-away overlay of /usr, /etc and /var)"
    ! getent passwd bulwark >/dev/null || fail "a bulwark user exists before the install"
    "$here/scripts/install.sh" --from "$bin" --strip > /dev/null
    getent passwd bulwark | grep -q ':/var/lib/bulwark:/usr/sbin/nologin$' \
      || fail "install.sh did not create the bulwark system user"
    as_user dave p11-kit list-modules 2>&1 | grep -q "^bulwark: /usr/lib/$multiarch/pkcs11/libbulwark_pkcs11.so" \
      || fail "p11-kit does not list the installed module"
    # A second run keeps an edited configuration and puts the shipped one beside it.
    echo '# edited by the administrator' >> /etc/bulwark/pkcs11.toml
    "$here/scripts/install.sh" --from "$bin" > /dev/null 2> "$T/reinstall.err"
    grep -q '^# edited by the administrator' /etc/bulwark/pkcs11.toml || fail "install.sh overwrote an edited pkcs11.toml"
    cmp /etc/bulwark/pkcs11.toml.dist "$here/packaging/pkcs11.toml" || fail "no pkcs11.toml.dist"
    grep -q 'kept your /etc/bulwark/pkcs11.toml' "$T/reinstall.err" || fail "install.sh did not say it kept the file"
    ;;
  deb)
    deb=$4
    step "dpkg -i (in a throw-away overlay of /usr, /etc and /var)"
    ! getent passwd bulwark >/dev/null || fail "a bulwark user exists before the install"
    dpkg -i "$deb"
    getent passwd bulwark > "$T/passwd" || true
    cat "$T/passwd"
    grep -q ':/var/lib/bulwark:/usr/sbin/nologin$' "$T/passwd" \
      || fail "postinst did not create the bulwark system user"
    dpkg -s bulwark | grep -q '^Status: install ok installed' || fail "dpkg -s bulwark"
    as_user carol p11-kit list-modules > "$T/modules" 2>&1
    grep -q "^bulwark: /usr/lib/$multiarch/pkcs11/libbulwark_pkcs11.so" "$T/modules" \
      || { cat "$T/modules"; fail "p11-kit does not list the packaged module"; }
    as_user carol pkcs11-tool --module "$proxy" -L | grep -q 'Bulwark slot 0: .*/home-carol/' \
      || fail "the packaged module's token is not visible through p11-kit-proxy.so"
    step "dpkg -r keeps the configuration, dpkg -P removes it"
    dpkg -r bulwark
    as_user carol p11-kit list-modules 2>&1 | grep -q '^bulwark:' && fail "module still registered after dpkg -r"
    [ -f /etc/bulwark/pkcs11.toml ] || fail "dpkg -r removed the conffile"
    [ ! -e /usr/lib/$multiarch/pkcs11/libbulwark_pkcs11.so ] || fail "dpkg -r left the module"
    dpkg -P bulwark
    [ ! -e /etc/bulwark/pkcs11.toml ] || fail "dpkg -P left /etc/bulwark/pkcs11.toml"
    ;;
  esac
  exit 0
fi

# ---------------------------------------------------------------- outside
[ "$(id -u)" = 0 ] || fail "needs root (mount namespaces for the fresh root)"
need=()
command -v p11-kit >/dev/null || need+=(p11-kit)
ls /usr/lib/*/p11-kit-proxy.so >/dev/null 2>&1 || need+=(p11-kit-modules)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v p11tool >/dev/null || need+=(gnutls-bin)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v openssl >/dev/null || need+=(openssl)
command -v unshare >/dev/null || need+=(util-linux)
command -v systemd-analyze >/dev/null || need+=(systemd)
ossl_modules=$(openssl version -m 2>/dev/null | sed -n 's/^MODULESDIR: "\(.*\)"/\1/p')
if [ ! -f "$ossl_modules/pkcs11.so" ]; then
  # Debian 12 ships pkcs11-provider in bookworm-backports only (Debian 13 has it in main).
  if . /etc/os-release && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/bulwark-backports.list
    need+=(pkcs11-provider/bookworm-backports)
  else
    need+=(pkcs11-provider)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ $# -ge 1 ]; then
  bin=$(realpath "$1")
else
  cargo build -q --locked -p bulwark-pkcs11 -p bulwarkd -p bulwark-cli
  bin=${CARGO_TARGET_DIR:-$here/target}/debug
fi

T=$(mktemp -d /tmp/bulwark-install-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

step "install.sh --destdir: the file list"
scripts/install.sh --destdir "$T/root" --from "$bin" --strip > "$T/files"
unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /usr/lib/systemd/system)
LC_ALL=C sort > "$T/want" <<EOF
/etc/bulwark/pkcs11.toml
$unitdir/bulwarkd.service
/usr/bin/bulwark
/usr/lib/$multiarch/pkcs11/libbulwark_pkcs11.so
/usr/lib/sysusers.d/bulwark.conf
/usr/sbin/bulwarkd
/usr/share/doc/bulwark/README.md
/usr/share/doc/bulwark/cli.md
/usr/share/doc/bulwark/daemon.md
/usr/share/doc/bulwark/examples/bulwarkd.toml
/usr/share/doc/bulwark/pkcs11.md
/usr/share/p11-kit/modules/bulwark.module
EOF
(cd "$T/root" && find . -type f | sed 's|^\.||' | LC_ALL=C sort) > "$T/found"
diff -u "$T/want" "$T/found" || fail "install.sh put different files"
LC_ALL=C sort "$T/files" | diff -u "$T/want" - || fail "install.sh reported different files"
cmp "$T/root/etc/bulwark/pkcs11.toml" packaging/pkcs11.toml
grep -qx "module: /usr/lib/$multiarch/pkcs11/libbulwark_pkcs11.so" \
  "$T/root/usr/share/p11-kit/modules/bulwark.module" || fail "bulwark.module: wrong module path"
# Wrong options fail with a message, and touch nothing.
if scripts/install.sh --destdir "$T/bad" --from /nonexistent 2> "$T/err"; then fail "install.sh --from /nonexistent succeeded"; fi
grep -q 'not found' "$T/err" || fail "install.sh: no clear message for a missing build"
[ ! -e "$T/bad" ] || fail "install.sh created its destination before failing"
if scripts/install.sh --prefix relative 2> /dev/null; then fail "install.sh accepted a relative prefix"; fi

unshare --mount --propagation private bash "$0" --inside destdir "$T"
unshare --mount --propagation private bash "$0" --inside real "$T" "$bin"

step "Debian package: contents"
deb=$(scripts/build-deb.sh --from "$bin" --out "$T" --fast)
dpkg-deb -I "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' | LC_ALL=C sort > "$T/deb-files"
diff -u "$T/want" "$T/deb-files" || fail "the package and install.sh disagree"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/bulwark/pkcs11.toml || fail "pkcs11.toml is not a conffile"
unshare --mount --propagation private bash "$0" --inside deb "$T" "$deb"

echo
echo "install-test: all installation checks passed"
