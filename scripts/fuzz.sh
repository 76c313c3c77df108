#!/usr/bin/env bash
# Bounded fuzzing for CI (issue 5). Self-contained: installs cargo-fuzz from crates.io if it is
# missing, builds the targets once, runs each for a fixed time, and fails on any finding.
# Memory is part of the contract: a run whose RSS passes 1 GiB, or any single allocation above
# 1 GiB (-rss_limit_mb / -malloc_limit_mb), is a finding, so an input that amplifies memory
# (issue 12) fails the run.
#
#   scripts/fuzz.sh                      # parse_infer 60 s, import_checkpoint 30 s
#   FUZZ_SECS=300 scripts/fuzz.sh        # longer parse_infer run
#   FUZZ_IMPORT_SECS=0 scripts/fuzz.sh   # skip the importer target
#
# Budget on 2 cores: cargo-fuzz build ~3.5 min (once, then cached in ~/.cargo/bin), targets
# ~2 min cold / ~30 s warm, runs 60 + 30 s.
#
# On a finding, libFuzzer writes fuzz/artifacts/<target>/crash-*: fix the bug, then copy the
# input to fuzz/regressions/<target>-<what> (replayed by
# crates/vimvq-rt/tests/hostile_files.rs::fuzz_regressions_replay) and note it in
# fuzz/regressions/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PARSE_SECS="${FUZZ_SECS:-60}"
IMPORT_SECS="${FUZZ_IMPORT_SECS:-30}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
# Shared target folder (kept apart from the normal builds: sanitizer flags differ).
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if ! cargo "+$TOOLCHAIN" fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi


cargo "+$TOOLCHAIN" fuzz build --fuzz-dir fuzz -O --target-dir "$TARGET_DIR"

# Seeds: the committed real .vimvq fixtures and the tiny real checkpoints, plus the hostile
# inputs of issue 12 (fuzz/seeds/<target>/: shared storages, repeated REDUCE of containers,
# stride-0 views, compressed entries, NaN weights, a .vimvq with huge valid dimensions; written
# by crates/vimvq-pack/tests/import.rs::fuzz_seeds_are_the_builders_output).
mkdir -p fuzz/corpus/parse_infer fuzz/corpus/import_checkpoint
cp -n crates/vimvq-pack/tests/data/tiny*.{pth,safetensors} fuzz/corpus/import_checkpoint/
cp -n fuzz/seeds/import_checkpoint/* fuzz/corpus/import_checkpoint/
cp -n fuzz/seeds/parse_infer/* fuzz/corpus/parse_infer/

status=0
run() {
    local target="$1" secs="$2" max_len="$3"
    shift 3
    [ "$secs" -gt 0 ] || return 0
    local log
    log="$(mktemp)"
    echo "== fuzz $target for ${secs}s"
    if ! timeout $((secs + 300)) cargo "+$TOOLCHAIN" fuzz run --fuzz-dir fuzz -O \
        --target-dir "$TARGET_DIR" "$target" "fuzz/corpus/$target" "$@" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=20 \
        -rss_limit_mb=1024 -malloc_limit_mb=1024 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FUZZ FINDING in $target: see fuzz/artifacts/$target/" >&2
        status=1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$log" || true
    grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1 || true
    rm -f "$log"
}

run parse_infer "$PARSE_SECS" 131072 crates/vimvq-rt/tests/data fuzz/regressions
run import_checkpoint "$IMPORT_SECS" 131072

exit "$status"
