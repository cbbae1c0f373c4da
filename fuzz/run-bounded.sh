#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, starting from the committed corpus, and fails
# on the first crash (panic, failed check, leak, timeout). The crashing input is left in
# fuzz/artifacts/<target>/; replay it with `cargo fuzz run -s none <target> <file>`.
#
# FUZZ_SECONDS: time per target (default 40: four targets, under three minutes).
# FUZZ_SANITIZER: cargo-fuzz's sanitizer (default none: the simulated memory is one host
# allocation, so ASan sees little here; fuzz/asan-tests.sh runs the tests under ASan).
# Without a sanitizer the default toolchain builds the targets; a sanitizer needs the
# nightly one. Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-40}
sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${CARGO_TARGET_DIR:-$root/target}/fuzz

if [ "$sanitizer" = none ]; then
    cargo=(cargo)
else
    cargo=(cargo +nightly)
    if ! cargo +nightly --version > /dev/null 2>&1; then
        echo "fuzz/run-bounded.sh: a sanitizer needs the nightly toolchain" >&2
        exit 1
    fi
fi
if ! cargo fuzz --version > /dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# New inputs go to a scratch directory; the committed corpus is only read.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

fuzz() {
    "${cargo[@]}" fuzz "$1" --sanitizer "$sanitizer" --target-dir "$target_dir" "${@:2}"
}

fuzz build
for target in $("${cargo[@]}" fuzz list); do
    echo "==> fuzz $target for ${seconds}s"
    mkdir -p "$scratch/$target"
    # grep hides libFuzzer's progress lines; the status is cargo fuzz's.
    set +e
    fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=30 -max_len=4096 -print_final_stats=1 2>&1 |
        grep -vE '^#[0-9]+\s+(NEW|REDUCE|pulse)'
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "fuzz/run-bounded.sh: $target failed (exit $status)" >&2
        exit "$status"
    fi
done
