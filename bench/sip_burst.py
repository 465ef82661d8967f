#!/usr/bin/env python3
"""SIP bursts: INVITEs sent back to back, with and without SDP, from an allowed (127.0.0.1) and a
refused (127.0.0.2) address, against one daemon on hw-sim; keypad -> relay timed meanwhile.

For each burst kind it prints: whether the daemon is the same process afterwards, how many times
the SIP process was restarted, the answers by status code (and INVITEs left unanswered after
RFC 3261's 32 s), and keypad -> relay p50/p99 while the burst ran (door 1 bistable: each PIN toggles).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.latency import KeypadProbe, percentile  # noqa: E402
from tests.procs import Daemon, HwSim  # noqa: E402
from tests.sipburst import BurstResult, burst  # noqa: E402
from tests.sipp import sip_env, wait_sip_up  # noqa: E402

KINDS = (("allowed", "127.0.0.1", True), ("allowed", "127.0.0.1", False), ("refused", "127.0.0.2", True),
         ("refused", "127.0.0.2", False))


def sip_status(daemon: Daemon) -> dict:
    return next(f["sip"] for f in daemon.ctl_json("status")["features"] if "sip" in f)


def one_burst(daemon: Daemon, probe: KeypadProbe, size: int, ip: str, sdp: bool) -> tuple[BurstResult, list[float]]:
    """The burst in a thread; the keypad probed on this one until the burst is over."""
    out: list[BurstResult] = []
    sender = threading.Thread(target=lambda: out.append(burst(daemon.sip_target, size, ip, sdp)))
    latencies: list[float] = []
    sender.start()
    while sender.is_alive() or not latencies:
        latencies.append(probe.once())
    sender.join()
    return out[0], latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="200,2000", help="burst sizes, comma separated")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-sip-burst-"))
    sim = HwSim(home / "hwsim.sock")
    sim.start()
    env = sip_env(DOORPHONED_DOORS_1_MODE="bistable")
    daemon = Daemon(home / "d", sim, env=env)
    daemon.sip_target = f"127.0.0.1:{env['DOORPHONED_SIP_PORT']}"  # type: ignore[attr-defined]
    try:
        daemon.start()
        wait_sip_up(daemon)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        user = daemon.ctl_json("user", "add", "Burst tester", "--doors", "1")
        daemon.ctl("pin", "set", user["id"], input="7351\n")
        probe = KeypadProbe(sim.socket, "7351")
        idle = probe.run(40)
        print(f"idle keypad -> relay ({len(idle)}): p50 {percentile(idle, 50):.2f} ms  "
              f"p99 {percentile(idle, 99):.2f} ms")
        for size in (int(s) for s in args.sizes.split(",")):
            for kind, ip, sdp in KINDS:
                before = sip_status(daemon)["restarts"]
                result, latencies = one_burst(daemon, probe, size, ip, sdp)
                sip = sip_status(daemon)
                same = daemon.proc.poll() is None and daemon.proc.pid == pid
                print(f"{size:5d} INVITEs, {kind} source, {'with' if sdp else 'no'} SDP: same daemon pid "
                      f"{'yes' if same else 'NO'}; SIP process restarts {sip['restarts'] - before}; answers "
                      f"{result.summary()}; keypad -> relay ({len(latencies)}) p50 {percentile(latencies, 50):.2f} "
                      f"ms p99 {percentile(latencies, 99):.2f} ms")
                if not same:
                    return 1
        probe.close()
    except Exception:
        print(daemon.log_text()[-3000:], file=sys.stderr)
        raise
    finally:
        daemon.kill()
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
