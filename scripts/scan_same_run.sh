#!/usr/bin/env bash
# Same-run comparison of the AVX2 scan of two builds of `benches/kernels.rs` (e.g. main's, copied
# aside, and this tree's): runs the criterion group `scan/Ti_L197_E384_N16/avx2` of each binary
# alternately ROUNDS times and prints the minimum point estimate per binary and their ratio
# (docs/RESULTS.md "Scan"). Usage: scripts/scan_same_run.sh ROUNDS OLD_BENCH_BIN NEW_BENCH_BIN
# Build a binary with `cargo bench --bench kernels --no-run` (it prints the executable's path).
set -euo pipefail
rounds=$1 old=$2 new=$3
point_ms() { # criterion's middle estimate, in ms
    "$1" --bench scan/Ti_L197_E384_N16/avx2 2>&1 | grep -A1 '^scan.*avx2$' | grep 'time:' |
        awk '{v=$4; u=$5; if (u=="µs") v/=1000; if (u=="s") v*=1000; print v}'
}
best_old=1e9 best_new=1e9
for _ in $(seq "$rounds"); do
    best_old=$(awk -v a="$best_old" -v b="$(point_ms "$old")" 'BEGIN{print (b<a)?b:a}')
    best_new=$(awk -v a="$best_new" -v b="$(point_ms "$new")" 'BEGIN{print (b<a)?b:a}')
done
awk -v o="$best_old" -v n="$best_new" 'BEGIN{
    u = 197*384*16
    printf "old %.3f ms (%.2f G updates/s)\nnew %.3f ms (%.2f G updates/s)\nratio %.2fx\n", o, u/o/1e6, n, u/n/1e6, o/n }'
