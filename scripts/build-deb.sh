#!/usr/bin/env bash
# Builds the Debian package `bulwark` from the same file layout scripts/install.sh makes (one
# list of locations for both), with dpkg-deb: Depends computed by dpkg-shlibdeps, the slot
# configuration as a conffile, and maintainer scripts that create the `bulwark` system user
# (systemd-sysusers, else adduser) and reload systemd. The daemon is not enabled or started.
#
# Usage: scripts/build-deb.sh [--from DIR] [--out DIR] [--fast]
#   --from DIR  built files (bulwark, bulwarkd, libbulwark_pkcs11.so); default: a release build
#   --out DIR   where the .deb goes (default: ${CARGO_TARGET_DIR:-target}/debian)
#   --fast      gzip -1 instead of xz (tests)
# Prints the path of the package.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
from='' out='' compress=(-Zxz)
while [ $# -gt 0 ]; do
  case $1 in
    --from) from=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "build-deb.sh: unknown option: $1" >&2; exit 1 ;;
  esac
done
out=${out:-${CARGO_TARGET_DIR:-$here/target}/debian}
for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture; do
  command -v $tool >/dev/null || { echo "build-deb.sh: $tool missing (apt-get install dpkg-dev)" >&2; exit 1; }
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$here/Cargo.toml")
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
install_args=(--destdir "$root" --prefix /usr --sysconfdir /etc --strip)
[ -z "$from" ] || install_args+=(--from "$from")
"$here/scripts/install.sh" "${install_args[@]}" > "$work/files"

# Shared-library dependencies of the binaries, the way debhelper computes them.
mkdir -p "$work/src/debian"
printf 'Source: bulwark\n\nPackage: bulwark\nArchitecture: any\n' > "$work/src/debian/control"
bins=("$root/usr/bin/bulwark" "$root/usr/sbin/bulwarkd" "$root"/usr/lib/*/pkcs11/libbulwark_pkcs11.so)
depends=$(cd "$work/src" && dpkg-shlibdeps -O "${bins[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: bulwark
Version: $version
Architecture: $arch
Maintainer: Bulwark developers <bulwark@example.invalid>
Installed-Size: $size
Depends: $depends, systemd | adduser
Recommends: p11-kit-modules
Suggests: opensc, gnutls-bin, libnss3-tools
Section: admin
Priority: optional
Description: software hardware security module (PKCS#11 module, network HSM daemon, CLI)
 Bulwark keeps keys in an encrypted, tamper-evident store and uses them only inside the
 module or the bulwarkd daemon. This package installs libbulwark_pkcs11.so in the PKCS#11
 module directory with its p11-kit registration, so p11-kit-aware applications (GnuTLS,
 NSS through p11-kit-proxy, OpenSSL's pkcs11-provider) see Bulwark tokens without
 configuration; the bulwark CLI; and bulwarkd with a hardened systemd unit (not enabled).
EOF
echo /etc/bulwark/pkcs11.toml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers /usr/lib/sysusers.d/bulwark.conf
    elif ! getent passwd bulwark >/dev/null; then
        adduser --system --group --home /var/lib/bulwark --no-create-home --quiet bulwark
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
EOF
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop bulwarkd.service >/dev/null 2>&1 || true
fi
EOF
cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
# The daemon's state (/var/lib/bulwark: the HSM's store) and users' tokens are never removed.
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  > "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/bulwark_${version}_${arch}.deb
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
