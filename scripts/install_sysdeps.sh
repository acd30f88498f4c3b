#!/bin/sh
# Debian packages for off-screen rendering (pyvista/VTK) and the report's headless-browser test.
# Installs only what is missing; needs root (CI and the dev machines run as root). Without root it
# says what is missing and carries on: the report falls back to matplotlib pictures and the browser
# test is skipped with a reason.
set -u
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
[ -e /usr/lib/x86_64-linux-gnu/libOSMesa.so.8 ] || [ -e /usr/lib/aarch64-linux-gnu/libOSMesa.so.8 ] || need="$need libosmesa6"
[ -e /usr/lib/x86_64-linux-gnu/libGL.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libGL.so.1 ] || need="$need libgl1"
[ -e /usr/lib/x86_64-linux-gnu/libEGL.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libEGL.so.1 ] || need="$need libegl1"
[ -e /usr/lib/x86_64-linux-gnu/libXrender.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libXrender.so.1 ] || need="$need libxrender1"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages:$need"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need) >/dev/null \
        || echo "warning: could not install$need; the report uses matplotlib pictures and the browser test is skipped"
else
    echo "note: missing system packages:$need (apt-get install them as root for 3-D report pictures and the browser test)"
fi
exit 0
