#!/usr/bin/env bash
# Dump `rdprobe analyze --json` (and --stages) for every fixture and corpus capture into a directory,
# so that a refactoring can show its stage verdicts and facts are byte-identical before and after:
#   scripts/analyze-dump.sh /tmp/before; ...change...; scripts/analyze-dump.sh /tmp/after
#   diff -r /tmp/before /tmp/after
# Corpus directories are taken from RDPROBE_CORPUS (space separated), default /work/shared/corpus{,/more}.
set -u
out=${1:?usage: analyze-dump.sh OUT_DIR}
bin=${RDPROBE_BIN:-target/debug/rdprobe}
mkdir -p "$out"
corpus=${RDPROBE_CORPUS:-/work/shared/corpus /work/shared/corpus/more}
for f in fixtures/captures/*.pcap* $(for d in $corpus; do ls "$d"/*.pcap "$d"/*.pcapng 2>/dev/null; done); do
    name=$(basename "$f")
    keys=()
    base=${f%.*}
    [ -f "$base.server-key.pem" ] && keys=(--rsa-key "$base.server-key.pem")
    "$bin" analyze --json "${keys[@]}" "$f" >"$out/$name.json" 2>"$out/$name.err"
    echo "exit $?" >>"$out/$name.json"
    "$bin" analyze --stages "${keys[@]}" "$f" >"$out/$name.stages" 2>/dev/null
done
# timings differ run to run only if the output carries wall-clock values; the analyzer's do not
ls "$out" | wc -l
