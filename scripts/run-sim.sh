#!/usr/bin/env bash
# `make run`: hw-sim in the background, the daemon in the foreground on the embedded default.
# Ctrl-C (or SIGTERM) stops the daemon cleanly, then hw-sim. Exits with the daemon's status: 0 after
# Ctrl-C, non-zero when it refused to start (78: configuration error, 1: another instance running).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var
started_hwsim=""
if ! .venv/bin/hwsim inputs >/dev/null 2>&1; then
    .venv/bin/hwsim run >var/hwsim.log 2>&1 &
    started_hwsim=$!
    for _ in $(seq 50); do .venv/bin/hwsim inputs >/dev/null 2>&1 && break; sleep 0.1; done
    echo "[run] hw-sim started (pid $started_hwsim, log var/hwsim.log)"
fi
cleanup() {
    # Stop hw-sim and wait for it: it removes its socket and keypad link on the way out.
    if [ -n "$started_hwsim" ]; then
        kill "$started_hwsim" 2>/dev/null || true
        wait "$started_hwsim" 2>/dev/null || true
    fi
}
trap cleanup EXIT
echo "[run] doorphoned --sim (try in another shell: .venv/bin/doorphonectl status)"
# hw-sim's fake BlueZ is on var/hwsim-dbus.sock (the embedded default's [ble] bus): scan it.
DOORPHONED_BLE_ENABLED=${DOORPHONED_BLE_ENABLED:-true} .venv/bin/doorphoned --sim "$@" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null' INT TERM
# `wait` also returns when the trap above runs; wait again until the daemon itself has exited.
while :; do
    status=0
    wait "$daemon" || status=$?
    kill -0 "$daemon" 2>/dev/null || break
done
if [ "$status" != 0 ]; then
    echo "[run] doorphoned exited with status $status" >&2
fi
exit "$status"
