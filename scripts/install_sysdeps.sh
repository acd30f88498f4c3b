#!/bin/sh
# Debian packages for off-screen 3-D pictures in the QA report (VTK/pyvista through EGL with Mesa's
# software renderer), the Chinese text in the report's pictures (fonts-noto-cjk: Noto Sans CJK SC)
# and for the headless-browser tests of the report and the web app (chromium, chromium-driver);
# libdeflate0 inflates the written 3MF 2.7x faster than zlib when the case reads it back
# (printpipe/verify.py; zlib otherwise). Installs only what is
# missing; needs root (CI and the dev machines run as root). Without root it says what is missing and
# carries on: the report falls back to matplotlib pictures and the browser test is skipped with a reason.
set -u
need=""
for pkg in libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri libxrender1 chromium chromium-driver fonts-noto-cjk libdeflate0; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages:$need"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need) >/dev/null \
        || echo "warning: could not install$need; the report uses matplotlib pictures and the browser test is skipped"
else
    echo "note: missing system packages:$need (apt-get install them as root for 3-D report pictures and the browser test)"
fi
exit 0
