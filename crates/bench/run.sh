#!/usr/bin/env bash
# Runs tollgate's benchmarks: builds tollgate and tollgate-bench in release mode, installs
# nginx when it is missing (as root, with apt-get; BENCH_NO_INSTALL=1 skips that), raises the
# open-file limit for the idle-streams scenario, and runs every scenario against every target.
# The markdown report is printed and saved under target/bench/. Extra arguments go to
# `tollgate-bench run` (see `target/release/tollgate-bench run --help`):
#
#   crates/bench/run.sh
#   crates/bench/run.sh --duration 10 --targets direct,tollgate,nginx
#   crates/bench/run.sh --scenarios closed,doors --concurrency 64 --targets tollgate
#   crates/bench/run.sh --scenarios closed --concurrency 64 \
#       --targets tollgate-key,tollgate-limits,tollgate-redis,tollgate-redis3
#   crates/bench/run.sh --scenarios closed,stream --concurrency 64 \
#       --targets tollgate,tollgate-base --tollgate-base /path/to/older/tollgate
#
# The tollgate-redis targets need Debian's redis-server, installed like nginx when missing (the
# bench starts its own on a free loopback port, no persistence).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -p tollgate -p tollgate-bench

if ! command -v nginx > /dev/null && [ -z "${BENCH_NO_INSTALL:-}" ] \
    && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    # Debian starts the nginx service on port 80 after installing it unless policy-rc.d
    # forbids it (Docker images do); the benchmark starts its own nginx either way.
    echo "run.sh: installing nginx (BENCH_NO_INSTALL=1 to skip)" >&2
    apt-get install -y --no-install-recommends nginx > /dev/null \
        || { apt-get update > /dev/null && apt-get install -y --no-install-recommends nginx > /dev/null; } \
        || echo "run.sh: nginx could not be installed; measuring without it" >&2
fi

if [[ " $* " == *tollgate-redis* ]] && ! command -v redis-server > /dev/null \
    && [ -z "${BENCH_NO_INSTALL:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "run.sh: installing redis-server (BENCH_NO_INSTALL=1 to skip)" >&2
    apt-get install -y --no-install-recommends redis-server > /dev/null \
        || { apt-get update > /dev/null && apt-get install -y --no-install-recommends redis-server > /dev/null; } \
        || echo "run.sh: redis-server could not be installed" >&2
fi

# A proxied idle stream holds two descriptors in the proxy: 10,000 need about 20,100.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

mkdir -p target/bench
echo "run.sh: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), open files $(ulimit -n)" >&2
exec target/release/tollgate-bench run --out "target/bench/results-$(date -u +%Y%m%dT%H%M%SZ).md" "$@"
