#!/usr/bin/env bash
# Starts FreeRDP 2.11's server (freerdp-shadow-cli) by hand, the way the tests do: under its own
# Xvfb, with a SAM file of users, a private $HOME (its certificate lands there), listening on
# 127.0.0.1 only, in the foreground. Ctrl-C stops both and removes the tempdir.
#
# Usage: scripts/peer-freerdp-shadow.sh [--port 3391] [--sec nla|tls|rdp] [--user alice:secret]...
#        (default user alice:secret)
# Then:  RDPROBE_PASSWORD=secret cargo run -- probe 127.0.0.1:3391 --user alice
set -euo pipefail

port=3391 sec=nla users=()
while (($#)); do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --sec) sec=$2; shift 2 ;;
    --user) users+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
((${#users[@]})) || users=(alice:secret)

check() { command -v "$1" >/dev/null || {
  echo "$1 not found: run scripts/install-peers.sh (apt-get install $2)" >&2; exit 1; }; }
check freerdp-shadow-cli freerdp2-shadow-x11
check Xvfb xvfb
check winpr-hash winpr-utils

dir=$(mktemp -d -t rdprobe-peer-shadow-XXXXXX)
xvfb_pid= shadow_pid=
cleanup() {
  for p in $shadow_pid $xvfb_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# SAM lines "user:::NTHASH:::" (NTHASH = MD4 of the UTF-16LE password).
for entry in "${users[@]}"; do
  winpr-hash -u "${entry%%:*}" -p "${entry#*:}" -f sam >>"$dir/SAM"
done

# Xvfb picks a free display itself and writes its number to the fd once it accepts clients.
Xvfb -displayfd 3 -nolisten tcp -noreset -screen 0 1024x768x24 3>"$dir/display" 2>"$dir/xvfb.log" &
xvfb_pid=$!
for _ in $(seq 100); do [[ -s $dir/display ]] && break; sleep 0.05; done
[[ -s $dir/display ]] || { echo "Xvfb did not start:" >&2; cat "$dir/xvfb.log" >&2; exit 1; }
display=":$(head -n1 "$dir/display")"
mkdir "$dir/home"

echo "freerdp-shadow-cli on 127.0.0.1:$port (/sec:$sec, users: ${users[*]%%:*}, DISPLAY=$display)"
echo "files in $dir; Ctrl-C to stop"
DISPLAY=$display HOME=$dir/home freerdp-shadow-cli "/port:$port" /bind-address:127.0.0.1 \
  "/sec:$sec" "/sam-file:$dir/SAM" &
shadow_pid=$!
wait "$shadow_pid"
