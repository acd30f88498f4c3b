#!/bin/sh
# Install the peer slicer for benchmarks/bench_slice.py: PrusaSlicer 2.5 from Debian.
# This is the benchmark's own setup; the tests never need it.
set -e
if command -v prusa-slicer >/dev/null 2>&1; then
    echo "prusa-slicer already installed: $(command -v prusa-slicer)"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update
apt-cache policy prusa-slicer | grep -q 'Candidate: [0-9]' || {
    echo "prusa-slicer is not available from apt on this system" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends prusa-slicer
