#!/bin/sh
# Property-based fault injection through the transport's syscall seam
# (platform-tests/tests/faults.rs).
#   ci/faults.sh          10,000 cases, debug build
#   ci/faults.sh --long   1,000,000 cases, release build
# PROPTEST_CASES overrides the count.
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--long" ]; then
    PROPTEST_CASES="${PROPTEST_CASES:-1000000}" exec cargo test --release -p platform-tests --test faults -- --nocapture
fi
PROPTEST_CASES="${PROPTEST_CASES:-10000}" exec cargo test -p platform-tests --test faults -- --nocapture
