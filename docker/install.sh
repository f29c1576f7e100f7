#!/bin/sh
# Install the SFU into a self-contained prefix: the image's whole install step.
#
#   docker/install.sh SRC PREFIX [--create-user]
#
# SRC is a source tree (pyproject.toml, sfu/, client/); PREFIX becomes a virtualenv with the
# server (PREFIX/bin/sfu) and the browser client (PREFIX/share/sfu/client). --create-user
# (as root, in the image) adds the unprivileged user "sfu" that runs the server.
# The Dockerfile RUNs this; tests/integration/test_deploy.py runs it into a temp prefix and
# starts what it installed, so CI proves the image's steps work without a Docker engine.
set -eu

SRC=${1:?usage: install.sh SRC PREFIX [--create-user]}
PREFIX=${2:?usage: install.sh SRC PREFIX [--create-user]}
CREATE_USER=${3:-}
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --upgrade pip
# A regular (not editable) install: the image needs no source tree.
"$PREFIX/bin/python" -m pip install --quiet "$SRC"
mkdir -p "$PREFIX/share/sfu"
rm -rf "$PREFIX/share/sfu/client"
cp -R "$SRC/client" "$PREFIX/share/sfu/client"
rm -rf "$PREFIX/share/sfu/client/tests"
# Fail now, not at the first call, if aiortc moved an internal we rely on.
"$PREFIX/bin/python" -c "from sfu.rtc import aiortc_glue as g; g.check_compatibility(); g.check_network_compatibility()"

if [ "$CREATE_USER" = "--create-user" ]; then
  if ! id sfu >/dev/null 2>&1; then
    useradd --system --uid 10001 --user-group --home-dir /home/sfu --create-home --shell /usr/sbin/nologin sfu
  fi
fi
echo "installed: $PREFIX/bin/sfu"
