#!/usr/bin/env bash
# System packages the test suite needs: Debian's Chromium (driven by Playwright with
# executable_path=/usr/bin/chromium), iproute2, nftables (random packet loss in the e2e tests),
# coturn (the TURN relay e2e test starts its own turnserver on 127.0.0.1; the package's
# system service is not used), redis-server (tests/redis_fixture.py starts its own servers
# on free loopback ports, persistence off; the package's system service is not used), and what
# the compiled send path builds with (sfu/rtc/_fastpath.c, by `pip install -e .`: a C compiler,
# the Python headers, libsrtp2's headers; without them the server falls back to the pure-Python
# path). For the WHIP/WHEP e2e tests: Meetecho's simple-whip-client, GStreamer (webrtcbin in
# plugins-bad, libnice, VP8 in good, x264 in ugly), PyGObject with the GStreamer typelibs (the
# webrtcbin scripts run on the system python3), and gcc (also for a stand-in UPnP library that
# lets Debian 12's simple-whip-client start; see tests/e2e/whip/igd_stub.c). Runs as root, or
# through sudo.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
fc-list >/dev/null 2>&1 || missing+=(fontconfig)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/srtp2/srtp.h ] || missing+=(libsrtp2-dev)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || missing+=(python3-dev)
command -v whip-client >/dev/null 2>&1 || missing+=(simple-whip-client)
for pkg in gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly \
  gstreamer1.0-nice python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
  gir1.2-gst-plugins-bad-1.0; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null
