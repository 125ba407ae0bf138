#!/usr/bin/env bash
# Profiles tollgate's hot path under closed-loop load: tollgate pinned to core 1, the fake
# upstream and the load generator on core 0, as in run.sh.
#
#   crates/bench/profile.sh perf        # perf stat (CPU and syscalls per request) + perf record
#   crates/bench/profile.sh callgrind   # instructions per request (valgrind; repeatable)
#   crates/bench/profile.sh strace      # system calls per request, by name (strace -c -f)
#
# Environment: LOG_LEVEL (info | warn, default info), STREAM=1 (20-chunk streams instead of
# whole answers), BURST=1 (with STREAM=1: the upstream writes each whole stream at once),
# DOOR (chat | messages | responses, default chat), CONC (connections, default 64; 8 under
# callgrind), SECS (default 10), REQUESTS (callgrind, default 2000; strace, default 640),
# GATEWAY (the tollgate binary, default target/release/tollgate), KEY=1 (one client key, sent by
# every request), LIMITS=1 (that key with rpm, tpm and tokens_per_day too high to refuse; memory
# store), OUT (default target/bench/profile).
set -euo pipefail

mode=${1:-perf}
cd "$(dirname "$0")/../.."
cargo build --release -p tollgate -p tollgate-bench
bench=target/release/tollgate-bench
gateway=${GATEWAY:-target/release/tollgate}
out=${OUT:-target/bench/profile}
secs=${SECS:-10}
port=${PORT:-18700}
stream=${STREAM:+--stream}
model=up:m
[ -n "${STREAM:-}" ] && [ -n "${BURST:-}" ] && model=up:burst
rm -rf "$out" && mkdir -p "$out/conf"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

taskset -c 0 "$bench" upstream --port 0 > "$out/upstream.port" &
pids+=($!)
until [ -s "$out/upstream.port" ]; do sleep 0.1; done
up=$(head -1 "$out/upstream.port")

# The configuration alone in its directory: tollgate watches that directory for reloads.
cat > "$out/conf/config.yaml" <<EOF
server: { host: 127.0.0.1, port: $port, shutdown_grace: 1 }
failure_handling: { keepalive_interval: 60 }
backends:
  up: { type: openai, api_url: "http://127.0.0.1:$up/v1", api_key: bench-upstream-key, models: [m, idle, burst], health_check: false }
logging: { format: json, level: ${LOG_LEVEL:-info} }
EOF
key=()
if [ -n "${KEY:-}${LIMITS:-}" ]; then
    key=(--key bench-client-key)
    limits=""
    [ -n "${LIMITS:-}" ] && limits=", limits: { rpm: 1000000000, tpm: 1000000000000, tokens_per_day: 1000000000000000 }"
    echo "auth: { keys: [ { name: bench, key: bench-client-key$limits } ] }" >> "$out/conf/config.yaml"
fi

drive() { taskset -c 0 "$bench" drive --addr "127.0.0.1:$port" --door "${DOOR:-chat}" --model "$model" "${key[@]}" $stream "$@"; }
wait_ready() {
    for _ in $(seq 1 300); do
        drive --concurrency 1 --requests 1 > /dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "profile: the gateway did not answer; see $out/tollgate.log" >&2
    exit 1
}

case $mode in
perf)
    conc=${CONC:-64}
    taskset -c 1 "$gateway" --config "$out/conf/config.yaml" 2> "$out/tollgate.log" &
    gw=$!
    pids+=($gw)
    wait_ready
    drive --concurrency "$conc" --duration 2 > /dev/null
    perf stat -e task-clock,context-switches,raw_syscalls:sys_enter -p "$gw" -o "$out/perf-stat.txt" &
    ps=$!
    drive --concurrency "$conc" --duration "$secs" | tee "$out/load.txt"
    kill -INT "$ps"; wait "$ps" || true
    n=$(awk '{print $1}' "$out/load.txt")
    awk -v n="$n" '/task-clock/ {gsub(",","",$1); printf "gateway CPU per request: %.1f µs\n", $1*1000/n}
                   /sys_enter/ {gsub(",","",$1); printf "syscalls per request: %.2f\n", $1/n}
                   /context-switches/ {gsub(",","",$1); printf "context switches per request: %.3f\n", $1/n}' "$out/perf-stat.txt"
    perf record -F 499 --call-graph dwarf,16384 -p "$gw" -o "$out/perf.data" 2> /dev/null &
    pr=$!
    drive --concurrency "$conc" --duration "$secs" > /dev/null
    kill -INT "$pr"; wait "$pr" || true
    perf report -i "$out/perf.data" --no-children --sort dso --stdio -g none 2> /dev/null \
        | grep -v '^#' | grep -v '^$' > "$out/by-dso.txt"
    perf report -i "$out/perf.data" --no-children --sort sym --stdio -g none 2> /dev/null \
        | grep -v '^#' | grep -v '^$' | sed 's/ \{3,\}/ /g' > "$out/by-symbol.txt"
    perf report -i "$out/perf.data" --children --sort sym --stdio -g none 2> /dev/null \
        | grep -E '\[\.\] (<?tollgate_|core::ptr::drop_in_place<tollgate_)' | sed 's/ \{3,\}/ /g' \
        > "$out/tollgate-inclusive.txt"
    echo "--- where the gateway's CPU went (perf, by binary)"
    head -5 "$out/by-dso.txt"
    echo "--- tollgate's own functions, % of the gateway's CPU, inclusive of callees (kernel too)"
    head -25 "$out/tollgate-inclusive.txt" | cut -c1-160
    echo "profile: full reports in $out (perf report -i $out/perf.data)"
    ;;
callgrind)
    conc=${CONC:-8}
    requests=${REQUESTS:-2000}
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
        "$gateway" --config "$out/conf/config.yaml" 2> "$out/tollgate.log" &
    gw=$!
    pids+=($gw)
    wait_ready
    drive --concurrency "$conc" --requests 200 > /dev/null
    callgrind_control -z "$gw" > /dev/null
    drive --concurrency "$conc" --requests "$requests"
    callgrind_control -d "$gw" > /dev/null
    dump=$(ls -t "$out"/callgrind.out.* | head -1)
    total=$(awk '/^summary:/ {print $2}' "$dump")
    echo "instructions per request (user space): $((total / requests))"
    callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$dump" 2> /dev/null > "$out/inclusive.txt"
    echo "--- tollgate's own functions, instructions per request, inclusive of callees"
    # "  12,345 ( 1.2%)  path/file.rs:function [object]": one line per function and source file
    # it was inlined from; keep each function's largest.
    sed -E -n 's/^ *([0-9,]+) \( *[0-9.]+%\) +[^ ]*\.(rs|c|S|h):(.*)$/\1\t\3/p' "$out/inclusive.txt" \
        | sed -E 's/ \[[^]]*\]$//' | tr -d , \
        | awk -F'\t' -v n="$requests" '$2 ~ /^(<?tollgate_|core::ptr::drop_in_place<tollgate_|<?tracing_subscriber::fmt::Subscriber)/ {
              if ($1 > best[$2]) best[$2] = $1 }
              END { for (f in best) printf "%9.0f  %s\n", best[f] / n, f }' \
        | sort -rn | head -40 | cut -c1-170
    echo "profile: full data in $dump (callgrind_annotate, kcachegrind)"
    ;;
strace)
    conc=${CONC:-32}
    requests=${REQUESTS:-640}
    taskset -c 1 "$gateway" --config "$out/conf/config.yaml" 2> "$out/tollgate.log" &
    gw=$!
    pids+=($gw)
    wait_ready
    drive --concurrency "$conc" --duration 2 > /dev/null
    # -f follows every thread (the runtime's worker, the log writer, jemalloc's purger).
    strace -c -f -p "$gw" -o "$out/strace.txt" &
    st=$!
    sleep 1 # strace attaches to each thread before the measured requests start
    drive --concurrency "$conc" --requests "$requests" | tee "$out/load.txt"
    kill -INT "$st"; wait "$st" || true
    n=$(awk '{print $1}' "$out/load.txt")
    echo "--- system calls of the gateway per request ($n requests), by name"
    awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { name = $NF; calls = ($4 ~ /^[0-9]+$/) ? $4 : 0;
                       if (calls > 0) printf "%8.2f  %s\n", calls / n, name }
                   ' "$out/strace.txt" | sort -rn | head -15
    awk -v n="$n" '$NF == "total" { printf "%8.2f  total\n", $4 / n }' "$out/strace.txt"
    echo "profile: strace's table in $out/strace.txt"
    ;;
*)
    echo "usage: $0 perf|callgrind|strace" >&2
    exit 2
    ;;
esac
