#!/bin/sh
# Peers the benchmarks compare against. Python peers (vtk, SimpleITK) come from the `bench` extra;
# PrusaSlicer comes from Debian. Installs only what is missing; needs root for apt.
set -u
if ! command -v prusa-slicer >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's prusa-slicer for the slicing benchmark"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prusa-slicer xvfb) >/dev/null \
            || echo "warning: prusa-slicer could not be installed; bench_slice.py will report it missing"
    else
        echo "note: prusa-slicer missing (apt-get install prusa-slicer as root)"
    fi
fi
exit 0
