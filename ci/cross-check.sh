#!/usr/bin/env bash
# Type-checks the whole workspace (libs, bins, tests, examples) for the BSDs,
# macOS and illumos from a Linux host, so that every backend's cfg-gated
# syscall code is at least compiled for the platforms it is written for.
#
#   ci/cross-check.sh                 # every target below
#   ci/cross-check.sh TARGET...       # a subset, e.g. x86_64-unknown-openbsd
#
# How: rustup cannot fetch the standard library for these targets (several
# are tier 3), so std is built from source with Debian's toolchain:
# rustc-web + cargo-web (a recent rustc in /usr/bin) and rust-web-src (the std
# source, which rustc finds at $(rustc --print sysroot)/lib/rustlib/src/rust,
# i.e. /usr/lib/rustlib/src/rust -> /usr/src/rustc-VERSION). They are
# installed with apt-get when missing. Then, per target:
#
#   RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo check --workspace \
#       --all-targets --locked -Zbuild-std=std,panic_abort --target TARGET
#
# in its own target directory (target/cross), so it never waits for the lock
# of the main build, without debuginfo or incremental data (only std's
# codegen costs time; nothing here is run or debugged). RUSTC_BOOTSTRAP=1
# unlocks -Zbuild-std on a stable rustc.
# --locked: this script never rewrites Cargo.lock. std's own dependencies
# come from crates.io (std's Cargo.lock pins them), like the workspace's.
#
# Output: one line per target, "cross-check TARGET: ok" or
# "cross-check TARGET: FAILED" followed by the compiler's errors (the full
# log is in target/cross/logs/TARGET.log). Exits 1 if any target failed.
#
# Time: the first run builds std once per target (about a minute each on two
# cores); later runs only re-check the workspace.
#
# Environment:
#   CROSS_RUSTC, CROSS_CARGO   the toolchain (default /usr/bin/rustc, /usr/bin/cargo)
#   CROSS_TARGET_DIR           the target directory (default target/cross)
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(
    x86_64-unknown-freebsd
    x86_64-unknown-netbsd
    x86_64-unknown-openbsd
    x86_64-unknown-dragonfly
    x86_64-apple-darwin
    aarch64-apple-darwin
    x86_64-unknown-illumos
)
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi

rustc_bin=${CROSS_RUSTC:-/usr/bin/rustc}
cargo_bin=${CROSS_CARGO:-/usr/bin/cargo}
target_dir=${CROSS_TARGET_DIR:-target/cross}

# The std source for $rustc_bin, or nothing.
std_src() {
    local sysroot
    sysroot=$("$rustc_bin" --print sysroot 2>/dev/null) || return 0
    if [ -f "$sysroot/lib/rustlib/src/rust/library/Cargo.lock" ]; then
        echo "$sysroot/lib/rustlib/src/rust/library"
        return 0
    fi
    # rust-web-src without the sysroot link: its tree is named by version.
    local version
    version=$("$rustc_bin" --version | awk '{print $2}')
    if [ -f "/usr/src/rustc-$version/library/Cargo.lock" ]; then
        echo "/usr/src/rustc-$version/library"
    fi
}

have_toolchain() {
    [ -x "$rustc_bin" ] && [ -x "$cargo_bin" ] && [ -n "$(std_src)" ]
}

if ! have_toolchain; then
    if [ -n "${CROSS_RUSTC:-}${CROSS_CARGO:-}" ]; then
        echo "cross-check: $rustc_bin / $cargo_bin (from CROSS_RUSTC/CROSS_CARGO) or their std source are missing" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "cross-check: needs Debian's rustc-web, cargo-web and rust-web-src, and apt-get is not here" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "cross-check: installing rustc-web, cargo-web and rust-web-src needs root (no sudo here)" >&2
            exit 1
        fi
    fi
    echo "cross-check: installing rustc-web, cargo-web, rust-web-src"
    # Wait for another apt/dpkg run rather than failing on its lock.
    apt_opts=(-q -o DPkg::Lock::Timeout=900)
    "${sudo[@]}" apt-get "${apt_opts[@]}" update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install -y --no-install-recommends rustc-web cargo-web rust-web-src
    if ! have_toolchain; then
        echo "cross-check: $rustc_bin, $cargo_bin or the std source are still missing after apt-get install" >&2
        exit 1
    fi
fi

src=$(std_src)
sysroot_src="$("$rustc_bin" --print sysroot)/lib/rustlib/src/rust/library"
env_extra=()
if [ "$(cd "$src" && pwd -P)" != "$(cd "$sysroot_src" 2>/dev/null && pwd -P || true)" ]; then
    # Cargo looks for std's source in the sysroot; point it elsewhere.
    env_extra=(__CARGO_TESTS_ONLY_SRC_ROOT="$src")
fi
echo "cross-check: $("$rustc_bin" --version), std source $src, target dir $target_dir"

mkdir -p "$target_dir/logs"
failed=()
start_all=$(date +%s)
for t in "${targets[@]}"; do
    log="$target_dir/logs/$t.log"
    start=$(date +%s)
    # Only the Debian toolchain: no rustup proxy, wrapper or foreign flags.
    # --no-default-features: the cli's default `tls` feature builds ring's C
    # code, and this host has no C cross compiler; the TLS transport is
    # target-independent Rust, checked natively. The backends keep `compat`
    # through the crates that depend on them with default features.
    if env -u RUSTC_WRAPPER -u RUSTUP_TOOLCHAIN -u CARGO_BUILD_TARGET "${env_extra[@]}" \
        RUSTC_BOOTSTRAP=1 RUSTC="$rustc_bin" CARGO_TARGET_DIR="$target_dir" \
        CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 \
        "$cargo_bin" check --workspace --all-targets --no-default-features --locked -Zbuild-std=std,panic_abort --target "$t" \
        >"$log" 2>&1; then
        # A warning fails the check too, as clippy -D warnings does natively:
        # a cfg-gated one (dead code on one platform) must not go unseen.
        warns=$(grep -E '^warning: ' "$log" | grep -cvE 'generated [0-9]+ warnings?|^warning: unused manifest key' || true)
        if [ "$warns" -gt 0 ]; then
            echo "cross-check $t: FAILED ($(($(date +%s) - start)) s; $warns warning(s), full log: $log)"
            awk '/^warning/ && !/generated [0-9]+ warning|unused manifest key/ { on = 1 } on { print } on && /^$/ { on = 0 }' "$log" | head -n 60 | sed 's/^/    /'
            failed+=("$t")
        else
            echo "cross-check $t: ok ($(($(date +%s) - start)) s)"
        fi
    else
        echo "cross-check $t: FAILED ($(($(date +%s) - start)) s; full log: $log)"
        # Each error with its location and source lines, without progress
        # lines or warnings.
        awk '/^error/ { on = 1 } on { print } on && /^$/ { on = 0 }' "$log" | head -n 80 | sed 's/^/    /'
        failed+=("$t")
    fi
done
echo "cross-check: ${#targets[@]} target(s) in $(($(date +%s) - start_all)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "cross-check: FAILED for ${failed[*]}"
    exit 1
fi
