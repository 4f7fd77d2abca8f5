#!/usr/bin/env bash
# Builds the fuzz targets and runs each in turn for SECONDS (default 60), starting from the
# committed seeds (fuzz/seeds/<target>), the local working corpus (fuzz/corpus/<target>,
# ignored by git) and the dictionary fuzz/dicts/<target>.dict if there is one. Prints
# libFuzzer's run count for each target and exits non-zero if any target found a failing
# input (saved under fuzz/artifacts/<target>/).
#
# Usage: bash fuzz/run.sh [SECONDS] [TARGET...]
set -uo pipefail

seconds=${1:-60}
shift || true
cd "$(dirname "$0")"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(host matcher socks5 config)
fi

cargo +nightly fuzz build || exit 2

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log=$(mktemp)
    echo "== $target: ${seconds}s"
    dict=()
    if [ -f "dicts/$target.dict" ]; then
        dict=(-dict="dicts/$target.dict")
    fi
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        # The panic (or sanitizer report) and where libFuzzer saved the input.
        grep -E -A4 'panicked at|^==[0-9]+==ERROR' "$log" | head -n 20
        grep -E '^SUMMARY|Test unit written to|^Error:' "$log"
        echo "== $target: FAILED after ${runs:-?} runs (exit $status)"
    else
        echo "== $target: ok, ${runs:-?} runs"
    fi
    rm -f "$log"
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "findings in: ${failed[*]}"
    exit 1
fi
