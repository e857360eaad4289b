#!/usr/bin/env bash
# Installs the Debian 12 packages rdprobe's tests and scripts need: the real peers (xrdp,
# freerdp-shadow, xfreerdp, tshark, nmap, Xvfb), the network tools, and the build dependencies
# (OpenSSL headers, pkg-config, a C toolchain). Idempotent; a fast no-op when all are present.
#
# Usage: scripts/install-peers.sh [--force]   (as root, or with sudo available)
#   --force   run apt-get update and install even when every package is present
set -euo pipefail

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

PACKAGES=(
  xrdp                 # RDP server: negotiate / TLS-only / RDP-security peers
  freerdp2-shadow-x11  # freerdp-shadow-cli: NLA (CredSSP) server
  freerdp2-x11         # xfreerdp: reference client
  winpr-utils          # winpr-hash: NT hashes for the shadow server's SAM file
  tshark               # validates every capture the tests write
  nmap                 # rdp-enum-encryption / rdp-ntlm-info cross-checks
  postgresql           # initdb + postgres: the shared scan store's tests (tests/scan_postgres.rs)
  xvfb                 # X display for freerdp-shadow-cli and xfreerdp
  openssl              # certificates for the peers
  libssl-dev           # build: openssl-sys
  pkg-config           # build: openssl-sys
  build-essential      # build: linker and C compiler for -sys crates
  ca-certificates      # build: crates.io over https
  curl                 # rustup, when no Rust toolchain is installed
  nftables             # fault injection inside test network namespaces
  iproute2             # ip netns / veth
  python3              # helper scripts
  procps               # ps, for diagnosing leftover peers
  util-linux           # setpriv: the probe without CAP_NET_RAW (tests/probe_wire.rs)
  chromium             # renders the --html report headless (tests/html.rs)
  fonts-dejavu-core    # the font the --html report names, for stable screenshots
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]] || ((force)); then missing+=("$pkg"); fi
done

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  elif ((${#missing[@]})) || [[ ! -e /etc/xrdp/rsakeys.ini ]]; then
    echo "install-peers: need root (or sudo) to install: ${missing[*]:-rsakeys.ini}" >&2
    exit 1
  fi
fi

if ((${#missing[@]})); then
  echo "install-peers: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark's setuid dumpcap question: answer "no" up front so the install never prompts.
  echo "wireshark-common wireshark-common/install-setuid boolean false" |
    "${SUDO[@]}" debconf-set-selections
  # Keep package scripts from starting system daemons (xrdp on :3389): the tests start their own.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    added_policy=1
  fi
  cleanup() { if ((added_policy)); then "${SUDO[@]}" rm -f "$policy"; fi; }
  trap cleanup EXIT
  "${SUDO[@]}" apt-get update -q
  # With recommends: the suites were developed and run against that package set (xorgxrdp,
  # fonts and xkb data for Xvfb/xfreerdp, the full tshark dissector set).
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o Dpkg::Use-Pty=0 "${missing[@]}"
fi

# xrdp reads its standard-RDP-security keys from here whatever --config says; the package's
# postinst creates them, but make sure.
if [[ ! -e /etc/xrdp/rsakeys.ini ]]; then
  echo "install-peers: generating /etc/xrdp/rsakeys.ini"
  "${SUDO[@]}" xrdp-keygen xrdp auto 2048 >/dev/null
fi

for bin in xrdp freerdp-shadow-cli xfreerdp winpr-hash tshark nmap Xvfb openssl; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then
    echo "install-peers: $bin still missing after install" >&2
    exit 1
  fi
done
echo "install-peers: all peers present"
