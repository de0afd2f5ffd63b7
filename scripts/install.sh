#!/usr/bin/env bash
# Installs Bulwark the way PKCS#11 tokens are installed on Debian-like systems:
#
#   PREFIX/lib/MULTIARCH/pkcs11/libbulwark_pkcs11.so   the module (p11-kit's module directory)
#   PREFIX/share/p11-kit/modules/bulwark.module         p11-kit registration: p11-kit-proxy.so and
#                                                       every p11-kit-aware application see the
#                                                       Bulwark tokens with no configuration
#   SYSCONFDIR/bulwark/pkcs11.toml                       commented default slot configuration
#   PREFIX/bin/bulwark, PREFIX/sbin/bulwarkd             the CLI and the daemon
#   UNITDIR/bulwarkd.service                             hardened systemd unit (not enabled)
#   PREFIX/lib/sysusers.d/bulwark.conf                   the daemon's system user
#   PREFIX/share/doc/bulwark/                            docs and examples/bulwarkd.toml
#
# Usage: scripts/install.sh [--destdir DIR] [--prefix /usr] [--sysconfdir /etc]
#                           [--unitdir DIR] [--multiarch TRIPLET] [--from DIR] [--strip]
#   --destdir DIR  stage into DIR (packaging, tests): nothing outside DIR is touched, no user is
#                  created, existing files in DIR are replaced
#   --from DIR     take the built files (bulwark, bulwarkd, libbulwark_pkcs11.so) from DIR
#                  instead of building them (`cargo build --release`)
#   --strip        strip debug information from the installed binaries
# Without --destdir (a real install, as root) an existing SYSCONFDIR/bulwark/pkcs11.toml is
# kept (the new one goes next to it as pkcs11.toml.dist), the `bulwark` system user is created,
# and systemd is told to reload units. The daemon is not enabled: see the unit file's header.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

destdir='' prefix=/usr sysconfdir=/etc unitdir='' multiarch='' from='' strip=0
die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --sysconfdir) sysconfdir=${2:?--sysconfdir needs a directory}; shift 2 ;;
    --unitdir) unitdir=${2:?--unitdir needs a directory}; shift 2 ;;
    --multiarch) multiarch=${2:?--multiarch needs a triplet}; shift 2 ;;
    --from) from=${2:?--from needs a directory}; shift 2 ;;
    --strip) strip=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
case $prefix in /*) ;; *) die "--prefix must be absolute: $prefix" ;; esac
case $sysconfdir in /*) ;; *) die "--sysconfdir must be absolute: $sysconfdir" ;; esac
if [ -n "$destdir" ]; then
  destdir=$(realpath -m "$destdir")
  [ "$destdir" != / ] || destdir=''
fi
# The module reads SYSCONFDIR/bulwark/pkcs11.toml; its built-in path is /etc unless it was built
# with BULWARK_SYSCONFDIR set to the same directory.
if [ "$sysconfdir" != /etc ] && [ "${BULWARK_SYSCONFDIR:-/etc}" != "$sysconfdir" ]; then
  echo "install.sh: note: the module looks for /etc/bulwark/pkcs11.toml unless built with" \
    "BULWARK_SYSCONFDIR=$sysconfdir" >&2
fi

if [ -z "$multiarch" ]; then
  multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || cc -print-multiarch 2>/dev/null || true)
  [ -n "$multiarch" ] || multiarch="$(uname -m)-linux-gnu"
fi
if [ -z "$unitdir" ]; then
  if [ "$prefix" = /usr ]; then
    unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)
    [ -n "$unitdir" ] || unitdir=/usr/lib/systemd/system
  else
    unitdir=$prefix/lib/systemd/system
  fi
fi
libdir=$prefix/lib/$multiarch
moddir=$libdir/pkcs11

if [ -z "$from" ]; then
  (cd "$here" && cargo build --release --locked -p bulwark-pkcs11 -p bulwarkd -p bulwark-cli)
  from=${CARGO_TARGET_DIR:-$here/target}/release
fi
for f in bulwark bulwarkd libbulwark_pkcs11.so; do
  [ -f "$from/$f" ] || die "$from/$f not found (build it, or give --from DIR)"
done

installed=()
put() { # MODE SOURCE TARGET (TARGET without DESTDIR)
  install -D -m "$1" "$2" "$destdir$3"
  installed+=("$3")
}
put_bin() { # MODE SOURCE TARGET
  put "$1" "$2" "$3"
  if [ "$strip" = 1 ]; then strip --strip-debug "$destdir$3"; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

put_bin 0755 "$from/bulwark" "$prefix/bin/bulwark"
put_bin 0755 "$from/bulwarkd" "$prefix/sbin/bulwarkd"
put_bin 0644 "$from/libbulwark_pkcs11.so" "$moddir/libbulwark_pkcs11.so"

# p11-kit registration, with the module's real path.
sed "s|^module:.*|module: $moddir/libbulwark_pkcs11.so|" "$here/packaging/bulwark.module" > "$tmp/bulwark.module"
put 0644 "$tmp/bulwark.module" "$prefix/share/p11-kit/modules/bulwark.module"

conf=$sysconfdir/bulwark/pkcs11.toml
if [ -z "$destdir" ] && [ -e "$conf" ] && ! cmp -s "$here/packaging/pkcs11.toml" "$conf"; then
  put 0644 "$here/packaging/pkcs11.toml" "$conf.dist"
  echo "install.sh: kept your $conf; the shipped default is $conf.dist" >&2
else
  put 0644 "$here/packaging/pkcs11.toml" "$conf"
fi

sed "s|@SBINDIR@|$prefix/sbin|g" "$here/packaging/bulwarkd.service" > "$tmp/bulwarkd.service"
put 0644 "$tmp/bulwarkd.service" "$unitdir/bulwarkd.service"
put 0644 "$here/packaging/bulwark.sysusers" "$prefix/lib/sysusers.d/bulwark.conf"

doc=$prefix/share/doc/bulwark
put 0644 "$here/README.md" "$doc/README.md"
for f in pkcs11.md daemon.md cli.md; do put 0644 "$here/docs/$f" "$doc/$f"; done
put 0644 "$here/packaging/bulwarkd.toml" "$doc/examples/bulwarkd.toml"

if [ -z "$destdir" ]; then
  if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$prefix/lib/sysusers.d/bulwark.conf"
  elif ! getent passwd bulwark >/dev/null; then
    adduser --system --group --home /var/lib/bulwark --no-create-home --quiet bulwark
  fi
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi

printf '%s\n' "${installed[@]}"
echo "install.sh: installed ${#installed[@]} files into ${destdir:-/}" >&2
