#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer): every target of fuzz/, one after the
# other, each for a bounded time.
#
#   ci/fuzz.sh [SECONDS_PER_TARGET]       default 60
#   ci/fuzz.sh --cmin                     minimize fuzz/corpus/* (before committing it)
#   FUZZ_SANITIZER=address ci/fuzz.sh 300 with ASan (default: none; the
#                                         checked code is safe Rust, and
#                                         overflow checks and debug
#                                         assertions are on either way)
#
# The targets and what each asserts: fuzz/src/lib.rs; figures and findings:
# docs/reliability.md ("Fuzzing"). The stable test cli/tests/fuzz_corpus.rs
# replays the committed inputs with the same checks, so `cargo test` covers
# them without this script.
#
# Inputs: fuzz/seeds/TARGET (written by hand) and fuzz/regressions/TARGET
# (past findings) are read; fuzz/corpus/TARGET is read and receives the new
# inputs. `--cmin` shrinks each corpus to a set cover of its features
# (edges only for the two relay targets, whose corpora are large otherwise).
#
# It installs what it needs: a nightly toolchain through rustup if there is
# none (cargo-fuzz needs nightly's sanitizer-coverage flags) and cargo-fuzz
# through `cargo install`. Without rustup, or when nightly cannot be
# installed (offline), it prints "skip: ..." and exits 0.
#
# Each run is one process (no -jobs/-fork) limited by -max_total_time, and
# each input by -timeout=10 s; the build and every run also sit under
# timeout(1), so the whole script is bounded: at most 30 min for the build
# plus (SECONDS + 60) per target. A crash, a failed assertion or a hang
# makes the script fail; libFuzzer leaves the input in
# fuzz/artifacts/TARGET/. Logs: target/fuzz-logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."

cmin=false
if [ "${1:-}" = "--cmin" ]; then
    cmin=true
    shift
fi
secs="${1:-60}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] | --cmin" >&2; exit 2 ;; esac
sanitizer="${FUZZ_SANITIZER:-none}"
targets=(ring_buffer relay_args relay_config http_status)

if ! command -v rustup >/dev/null 2>&1; then
    echo "skip: rustup is not installed, so no nightly toolchain for cargo-fuzz"
    exit 0
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain (cargo-fuzz needs it)"
    if ! rustup toolchain install nightly --profile minimal; then
        echo "skip: no nightly toolchain and it could not be installed (offline?)"
        exit 0
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly --version
cargo fuzz --version

echo "=== build (sanitizer: $sanitizer)"
timeout 1800 cargo +nightly fuzz build -s "$sanitizer"

logs=target/fuzz-logs
mkdir -p "$logs"

if $cmin; then
    for t in "${targets[@]}"; do
        merge=(-set_cover_merge=1)
        case "$t" in relay_*) merge+=(-use_counters=0) ;; esac
        before=$(find "fuzz/corpus/$t" -type f | wc -l)
        timeout 1800 cargo +nightly fuzz cmin -s "$sanitizer" "$t" -- "${merge[@]}" >"$logs/$t-cmin.log" 2>&1
        echo "$t: $before -> $(find "fuzz/corpus/$t" -type f | wc -l) files, $(find "fuzz/corpus/$t" -type f -exec cat {} + | wc -c) bytes"
    done
    exit 0
fi

failed=()
for t in "${targets[@]}"; do
    echo "=== $t, $secs s"
    args=(-max_total_time="$secs" -timeout=10)
    if [ -f "fuzz/dict/$t.dict" ]; then
        args+=(-dict="fuzz/dict/$t.dict")
    fi
    mkdir -p "fuzz/corpus/$t"
    inputs=("fuzz/corpus/$t" "fuzz/seeds/$t")
    if [ -d "fuzz/regressions/$t" ]; then
        inputs+=("fuzz/regressions/$t")
    fi
    if timeout $((secs + 60)) cargo +nightly fuzz run -s "$sanitizer" "$t" "${inputs[@]}" -- "${args[@]}" >"$logs/$t.log" 2>&1; then
        # libFuzzer's last lines: "Done N runs in S second(s)", corpus size.
        grep -E '^Done [0-9]+ runs' "$logs/$t.log" || true
        grep -E '^#[0-9]+' "$logs/$t.log" | tail -n 1 || true
    else
        echo "FAILED: $t (log: $logs/$t.log; input: fuzz/artifacts/$t/)"
        grep -E -A 3 'panicked at|ERROR: libFuzzer|SUMMARY' "$logs/$t.log" | head -n 20 || true
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed: ${failed[*]}"
    exit 1
fi
echo "fuzzing passed: ${targets[*]}, $secs s each"
