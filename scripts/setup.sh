#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian bookworm machine (run as root): apt packages, the
# doorphoned system group, a virtualenv in .venv with editable installs of doorphoned and hw-sim.
# Every step checks before it acts, so a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev build-essential sqlite3 systemd passwd util-linux procps libzbar0 mosquitto mosquitto-clients openssl sip-tester dbus-daemon
    gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gstreamer1.0-tools libgirepository1.0-dev libcairo2-dev pkg-config ffmpeg)
VENV=.venv
# Debian's interpreter, not a per-user one (pyenv lives under /root, which other uids cannot read,
# and the tests run the CLI as `nobody`).
PYTHON=${DOORPHONED_PYTHON:-/usr/bin/python3}

say() { printf '[setup] %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        say "need root to install: ${missing[*]}"; exit 1
    fi
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The control socket admits root and members of this group (DESIGN §6); sysusers creates it on
# a real unit, here we create it directly when we can.
if ! getent group doorphoned >/dev/null && [ "$(id -u)" = 0 ]; then
    say "creating system group doorphoned"
    groupadd --system doorphoned
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

# face_recognition without its dependencies: they are in setup.cfg, except "dlib", which dlib-bin provides as a
# wheel (NOTES-deps: asking pip for "dlib" starts a 9-minute source build).
FACE_RECOGNITION=1.3.0
stamp="$VENV/.installed"
want=$( (cat setup.cfg hw-sim/setup.cfg pyproject.toml hw-sim/pyproject.toml; echo "$FACE_RECOGNITION") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing doorphoned and hwsim (editable) into $VENV"
    log="$VENV/pip-install.log"
    if ! { "$VENV/bin/pip" install --upgrade pip setuptools wheel &&
           "$VENV/bin/pip" install -e ./hw-sim -e '.[dev]' &&
           "$VENV/bin/pip" install --no-deps "face_recognition==$FACE_RECOGNITION"; } >"$log" 2>&1; then
        tail -n 40 "$log"; say "pip install failed (full log: $log)"; exit 1
    fi
    echo "$want" > "$stamp"
fi
say "ready"
