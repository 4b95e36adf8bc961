#!/bin/sh
# Soak and chaos run of the relay (issue 6, item 3), bounded in time.
#
#   ci/soak.sh                         60 s, 2,000 connections
#   ci/soak.sh --duration 20           a short run (about 45 s in all)
#   ci/soak.sh --duration 20 --conns 500 --splice never
#
# Builds the release relay and the driver (platform-tests/src/bin/soak),
# raises the fd soft limit to the hard limit, and runs the driver: three
# echo backends killed (RST or FIN) and restarted while clients transfer,
# reset, trickle bytes (slowloris), send garbage and half-close. It prints
# the figures and one line per check, then PASS or FAIL; the exit status is
# non-zero on any failed check. Every option is passed to the driver (see
# `target/release/soak --help`). The relay's log (RUST_LOG=info) is kept in
# target/soak-relay.log. Loopback only; nothing is installed.
set -eu
cd "$(dirname "$0")/.."

duration=60
prev=
for a in "$@"; do
    if [ "$prev" = "--duration" ]; then duration=$a; fi
    prev=$a
done

timeout 900 cargo build --release --quiet -p anypoll-cli --bin anypoll -p platform-tests --bin soak

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 10000 ]; then
    echo "soak: the fd hard limit is $hard; 2,000 connections need about 10,000 (fewer with --conns)" >&2
fi
ulimit -n "$hard" 2>/dev/null || true

# The run takes the duration plus a warm-up, the drain of slow clients and
# the checks: about duration + 25 s; the bound leaves room for a loaded box.
exec timeout --kill-after=10 $((duration + 120)) target/release/soak "$@"
