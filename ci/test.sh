#!/usr/bin/env bash
# The one test command of anypoll. CI (.ci/run) and the workflow files under
# .github/workflows run exactly this, on Linux, macOS, the BSDs and illumos.
#
# It installs what it needs itself (rustup components; on Debian/Ubuntu the
# cross-check toolchain, through ci/cross-check.sh; the workflow validator,
# through npm), then runs, stopping at the first failure:
#   1. cargo fmt --check
#   2. cargo clippy --workspace --all-targets -D warnings
#   3. cargo test --workspace (unit tests, doc tests, the conformance matrix)
#   3b. the kernel models (Linux): every test family again on kqueue-model and
#      evports-model, and the demo on each; then, where pkg-config finds
#      libkqueue, the conformance matrix and loop tests on kqueue-libkqueue
#   4. cargo doc, warnings denied
#      packaging: cargo package for the published crates, their file lists,
#      and ci/msrv-check.py (rust-version true for the locked dependency tree)
#   5. the demo, short (README's main command)
#   6. ci/soak.sh --duration 20: the relay under chaos, 2,000 connections (Linux: it reads /proc)
#   7. ci/cross-check.sh: every backend type-checked for the BSDs, macOS, illumos (Linux hosts only)
#   8. the workflow files validated against the GitHub Actions schema (where npm exists)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
os=$(uname -s)

step "toolchain"
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null
fi
cargo --version
rustc --version

# The TLS relay tests (cli/tests/relay_tls_peers.rs) run Debian's curl and
# openssl as real peers; without them they fail, saying which is missing.
if ! command -v curl >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        step "installing curl and openssl (TLS peer tests)"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl openssl >/dev/null
    fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
# --no-fail-fast: a failure in one test binary still lets the others run, so
# one CI log names every failing test.
cargo test --workspace --no-fail-fast

if [ "$os" = Linux ]; then
    step "models"
    ci/models.sh
else
    echo "skip: the kernel models are built on Linux only (this is $os, which runs its own kernel)"
fi

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "packaging"
# The published crates package without CI scripts, workflows or bench
# output, and each one's rust-version is true for its locked normal tree.
published=(anypoll-backends anypoll anypoll-relay)
pkg_args=()
for p in "${published[@]}"; do pkg_args+=(-p "$p"); done
cargo package --no-verify --allow-dirty -q "${pkg_args[@]}"
for p in "${published[@]}"; do
    if cargo package --list --allow-dirty -q -p "$p" | grep -E '^(ci/|\.ci/|\.github/|fuzz/)|\.svg$'; then
        echo "packaging: $p's package holds files that are not the crate's (above)" >&2
        exit 1
    fi
done
python3 ci/msrv-check.py

step "demo (short)"
cargo run --release -q -- demo --quick

if [ "$os" = Linux ]; then
    step "soak (short)"
    ci/soak.sh --duration 20
else
    echo "skip: the soak reads /proc, so it runs on Linux only (this is $os)"
fi

if [ "$os" = Linux ]; then
    step "cross-check"
    ci/cross-check.sh
else
    echo "skip: cross-check runs on a Debian/Ubuntu host only (this is $os, which tests its own backend natively)"
fi

step "workflow files"
if command -v npm >/dev/null 2>&1; then
    tools=target/ci-tools
    if [ ! -x "$tools/node_modules/.bin/action-validator" ]; then
        mkdir -p "$tools"
        npm install --prefix "$tools" --no-audit --no-fund --silent @action-validator/cli @action-validator/core
    fi
    for f in .github/workflows/*.yml; do
        "$tools/node_modules/.bin/action-validator" "$f"
        echo "valid: $f"
    done
else
    echo "skip: npm is not installed here, so the workflow files are not validated"
fi

step "all checks passed"
