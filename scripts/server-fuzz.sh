#!/usr/bin/env bash
# Long server-side fuzzing run: the lab mutates what it sends at each stage (one case per
# connection) while rdprobe probe / enum / replay --as-client / fuzz run against it. Prints, per
# stage, the connections served, the mutated server PDUs, cases/s and the classes of outcomes
# (last stage / verdict kind / exit code); fails on a panic, a run past its deadline, or a probe
# without a verdict. The same harness runs a few cases per stage in `cargo test --test server_fuzz`.
#
#   scripts/server-fuzz.sh [--cases N] [--seed S] [--stages x224,tls,...] [--release]
#
# --cases: probes per stage (default 500; the standard-security mcs stage runs 6x as many).
# --stages: x224, tls, credssp, mcs, channels, licensing, capabilities, error (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."

cases=500
seed=1
stages=""
profile=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) cases="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --stages) stages="$2"; shift 2 ;;
        --release) profile=(--release); shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

export SERVER_FUZZ_CASES="$cases" SERVER_FUZZ_SEED="$seed"
if [ -n "$stages" ]; then
    export SERVER_FUZZ_STAGES="$stages"
fi
exec cargo test "${profile[@]}" --test server_fuzz long_run -- --ignored --nocapture --test-threads 1
