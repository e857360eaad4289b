#!/usr/bin/env bash
# Starts a real xrdp by hand, the way the tests do: its own xrdp.ini and certificate in a tempdir,
# listening on 127.0.0.1 only, in the foreground. Ctrl-C stops it and removes the tempdir.
# /etc is not modified (xrdp still reads /etc/xrdp/rsakeys.ini and the keymaps).
#
# Usage: scripts/peer-xrdp.sh [--port 3390] [--security negotiate|tls|rdp] [--crypt high|fips|...]
#                             [--cert valid|expired|unreadable|corrupt] [--tls10]
# Then:  cargo run -- probe 127.0.0.1:3390
set -euo pipefail

port=3390 security=negotiate crypt=high cert=valid tls10=0
while (($#)); do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --security) security=$2; shift 2 ;;
    --crypt) crypt=$2; shift 2 ;;
    --cert) cert=$2; shift 2 ;;
    --tls10) tls10=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

PATH="$PATH:/usr/sbin:/sbin"
for bin in xrdp openssl; do
  command -v "$bin" >/dev/null || {
    echo "$bin not found: run scripts/install-peers.sh (apt-get install $bin)" >&2; exit 1; }
done
[[ -e /etc/xrdp/rsakeys.ini ]] || xrdp-keygen xrdp auto 2048 >/dev/null

dir=$(mktemp -d -t rdprobe-peer-xrdp-XXXXXX)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

certfile=$dir/cert.pem keyfile=$dir/key.pem
case "$cert" in
  valid)
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 -subj "/CN=xrdp.rdprobe.test" \
      -keyout "$keyfile" -out "$certfile" 2>/dev/null ;;
  expired)
    # OpenSSL 3 refuses negative -days: self-sign through `openssl ca` with explicit dates.
    cat >"$dir/ca.cnf" <<CNF
[ ca ]
default_ca = CA_default
[ CA_default ]
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = policy_any
[ policy_any ]
commonName = supplied
CNF
    : >"$dir/index.txt"; echo 01 >"$dir/serial"
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=xrdp-expired.rdprobe.test" \
      -keyout "$keyfile" -out "$dir/req.csr" 2>/dev/null
    openssl ca -batch -config "$dir/ca.cnf" -selfsign -keyfile "$keyfile" -in "$dir/req.csr" \
      -out "$certfile" -notext \
      -startdate "$(date -u -d '400 days ago' +%Y%m%d%H%M%SZ)" \
      -enddate "$(date -u -d '30 days ago' +%Y%m%d%H%M%SZ)" 2>/dev/null ;;
  unreadable)
    # Dangling symlinks: xrdp cannot read them (a chmod 000 file is still readable by root).
    ln -s "$dir/missing-cert.pem" "$certfile"; ln -s "$dir/missing-key.pem" "$keyfile" ;;
  corrupt)
    echo "not a certificate" >"$certfile"; echo "not a key" >"$keyfile" ;;
  *) echo "unknown --cert $cert" >&2; exit 2 ;;
esac

protocols="TLSv1.2, TLSv1.3" ciphers=
if ((tls10)); then
  protocols="TLSv1"
  ciphers="AES128-SHA:AES256-SHA:DES-CBC3-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:@SECLEVEL=0"
fi

# The system xrdp.ini with the [Globals] and [Logging] keys we need replaced.
awk -v port="$port" -v sec="$security" -v crypt="$crypt" -v cert="$certfile" -v key="$keyfile" \
    -v protos="$protocols" -v ciphers="$ciphers" -v logfile="$dir/xrdp.log" '
  function flush() {
    if (section == "Globals") {
      print "fork=false"; print "port=tcp://127.0.0.1:" port; print "use_vsock=false"
      print "security_layer=" sec; print "crypt_level=" crypt
      print "certificate=" cert; print "key_file=" key; print "ssl_protocols=" protos
      if (ciphers != "") print "tls_ciphers=" ciphers
    } else if (section == "Logging") {
      print "LogFile=" logfile; print "LogLevel=INFO"; print "EnableSyslog=false"
      print "EnableConsole=true"; print "ConsoleLevel=INFO"
    }
  }
  /^\[.*\]$/ { flush(); section = substr($0, 2, length($0) - 2); print; next }
  section == "Globals" && /^(fork|port|use_vsock|security_layer|crypt_level|certificate|key_file|ssl_protocols|tls_ciphers)=/ { next }
  section == "Logging" && /^(LogFile|LogLevel|EnableSyslog|EnableConsole|ConsoleLevel)=/ { next }
  { print }
  END { flush() }
' /etc/xrdp/xrdp.ini >"$dir/xrdp.ini"

echo "xrdp on 127.0.0.1:$port (security_layer=$security crypt_level=$crypt cert=$cert tls10=$tls10)"
echo "config and log in $dir; Ctrl-C to stop"
xrdp --nodaemon --config "$dir/xrdp.ini" &
pid=$!
wait "$pid"
