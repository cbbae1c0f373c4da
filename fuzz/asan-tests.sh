#!/usr/bin/env bash
# Runs the library's test suite (page_table_multiarch with `copy-from`, and testkit; not the
# QEMU oracle nor the benchmarks) under AddressSanitizer with the nightly toolchain, in its
# own target directory. Fails on a failing test or any sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-$PWD/target}/asan
if ! cargo +nightly --version > /dev/null 2>&1; then
    echo "fuzz/asan-tests.sh: the nightly toolchain is required" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# With an explicit --target the flags apply to the tests and the libraries only, not to
# build scripts.
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
set +e
cargo +nightly test --target x86_64-unknown-linux-gnu --target-dir "$target_dir" \
    -p page_table_multiarch -p testkit --features page_table_multiarch/copy-from 2>&1 |
    tee "$log"
status=${PIPESTATUS[0]}
set -e
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)' "$log"; then
    echo "fuzz/asan-tests.sh: sanitizer report" >&2
    exit 1
fi
exit "$status"
