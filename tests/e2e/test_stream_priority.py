"""The monitor stream's threads run at the configured lower priority (``monitor.encoder_nice``), the rest of
the process at its own: read from ``/proc/<pid>/task/*/stat`` of a real stream host while a viewer plays."""

from __future__ import annotations

from pathlib import Path

from tests.procs import wait_for
from tests.rtsp import PASSWORD, MonitorHost, RawRtsp


def threads(pid: int) -> list[tuple[str, int]]:
    """(name, nice value) of each thread of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        found.append((name, int(stat.rsplit(")", 1)[1].split()[16])))
    return found


def playing_threads(tmp_path: Path, *args: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The threads of a stream host while one viewer receives RTP (so the encoder and x264's workers run), and
    once that viewer has left and the encoder stopped."""
    host = MonitorHost(tmp_path, *args)
    host.start()
    viewer = RawRtsp(host.port, "installer", PASSWORD)
    try:
        assert viewer.play() == 200
        assert viewer.rtp_packets(10) == 10, host.log.read_text()[-2000:]
        assert host.proc is not None
        playing = threads(host.proc.pid)
        viewer.close()
        wait_for(lambda: host.request("status")["encoder"]["fps"] == 0, timeout=60, what="the encoder stopped")
        wait_for(lambda: {n for _, n in threads(host.proc.pid)} == {0}, timeout=30,  # type: ignore[union-attr]
                 what="the streaming threads back at nice 0")
        return playing, threads(host.proc.pid)
    finally:
        viewer.close()
        host.stop()


def streaming(found: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """GStreamer's streaming threads, named ``element:pad`` (x264's workers inherit the encoder thread's name)."""
    return [thread for thread in found if thread[0].endswith(":src")]


def test_the_encoder_and_its_workers_run_at_the_configured_nice_value_while_the_stream_runs(tmp_path):
    found, after = playing_threads(tmp_path, "--encoder-nice", "12")
    encoder = [nice for name, nice in found if name == "raw:src"]  # the encoder's thread and x264's workers
    assert encoder and set(encoder) == {12}, found
    assert {nice for _, nice in streaming(found)} == {12}, found
    others = [nice for name, nice in found if not name.endswith(":src") and not name.startswith("rtpsession")]
    assert set(others) == {0}, found  # the Python threads (the QR thread's neighbours) keep their priority
    assert {nice for _, nice in after} == {0}, after  # threads back in GLib's pool serve what comes next at 0


def test_nice_zero_leaves_the_stream_at_the_process_priority(tmp_path):
    found, _ = playing_threads(tmp_path, "--encoder-nice", "0")
    assert streaming(found) and {n for _, n in found} == {0}, found
