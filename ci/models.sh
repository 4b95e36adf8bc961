#!/usr/bin/env bash
# The kernel models' step of ci/test.sh (Linux): the test families of
# `cargo test --workspace` once more, in a build with the feature `models`,
# so that the kqueue and event-ports backends run under the whole stack on
# kqueue-model and evports-model. Then libkqueue, where this host has it.
#
# Families that iterate the registry (the conformance matrix, the loop
# tests, the transport personalities, relay_traffic) run once: the models
# are two more backends in their loop. Families that use the default
# backend (the fault-injection property test, the EMFILE personality, the
# relay and CLI relay tests) run once per model with ANYPOLL_POLLER. The
# families that concern neither the pollers nor the models (fuzz corpus,
# examples, bench, splice on epoll) are not repeated.
set -euo pipefail
cd "$(dirname "$0")/.."

# One feature set for every command below, so that cargo builds each crate
# once: anypoll-backends/models reaches every crate through unification.
models=(--features anypoll-backends/models)

say() { printf -- '--- %s\n' "$*"; }

say "the models' own tests and quirk switches"
cargo test -q -p anypoll-backends "${models[@]}"

say "families that iterate the registry (the models included)"
cargo test -q -p platform-tests "${models[@]}" --test conformance --test personality --test personality_splice_hangup
cargo test -q -p anypoll "${models[@]}" \
    --test loop_emfile --test loop_lost_events --test loop_misc --test loop_no_spin
cargo test -q -p anypoll-relay "${models[@]}" --test relay_traffic

cargo build -q -p anypoll-cli "${models[@]}"
for m in kqueue-model evports-model; do
    say "families on the default backend, ANYPOLL_POLLER=$m"
    ANYPOLL_POLLER=$m cargo test -q -p platform-tests "${models[@]}" --test faults --test personality_emfile
    ANYPOLL_POLLER=$m cargo test -q -p anypoll-relay "${models[@]}" --test relay_health --test relay_timeouts
    ANYPOLL_POLLER=$m cargo test -q -p anypoll-cli "${models[@]}" \
        --test relay_cli --test relay_exhaustion --test relay_security
    say "demo (short) on $m"
    target/debug/anypoll --poller "$m" demo --quick
done

if pkg-config --exists libkqueue 2>/dev/null; then
    say "libkqueue: the kqueue backend over $(pkg-config --modversion libkqueue) as kqueue-libkqueue"
    lk=(--features anypoll-backends/libkqueue)
    # libkqueue is a shared library outside the loader's path as often as not.
    libdir=$(pkg-config --variable=libdir libkqueue)
    export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    cargo test -q -p platform-tests "${lk[@]}" --test conformance
    cargo test -q -p anypoll "${lk[@]}" --test loop_emfile --test loop_lost_events --test loop_misc --test loop_no_spin
else
    echo "skip: libkqueue: not installed on this host (it is not in Debian bookworm); the kqueue backend ran on kqueue-model"
fi
