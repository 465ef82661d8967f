"""What the camera process imports before anything happens: each module here is RSS an idle unit carries
(docs/performance.md, "idle RSS"), so the ones only a rare path needs stay out until that path runs."""

from __future__ import annotations

import json
import subprocess
import sys

# The daemon's capture store (asyncio, ssl, SQLite: ~8 MB), pyzbar (ctypes, libzbar: ~4 MB; only for frames
# zxing-cpp saw a code in and could not read).
NOT_AT_START = ("asyncio", "ssl", "sqlite3", "pyzbar", "doorphoned.camera.captures", "doorphoned.core.store")


def _loaded(code: str) -> list[str]:
    probe = f"import sys, json; {code}; print(json.dumps(sorted(m for m in {NOT_AT_START!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_the_camera_process_its_qr_decoder_and_motion_detector_import_none_of_the_rare_paths() -> None:
    code = ("import doorphoned.camera.process, doorphoned.camera.qr, doorphoned.camera.motion,"
            " doorphoned.camera.jpeg, doorphoned.core.clock; doorphoned.camera.qr.QrDecoder()")
    assert _loaded(code) == []


def test_the_pyzbar_fallback_is_imported_and_reads_when_zxing_saw_a_code_it_could_not_read() -> None:
    """zxing-cpp is told to report an unreadable symbol (a hard frame's outcome, made certain here): pyzbar is
    imported then, and reads the code."""
    code = ("import numpy as np, segno, zxingcpp, types;"
            "from doorphoned.camera import qr;"
            "m = np.array(list(segno.make_qr('FALLBACK-PROBE', error='m').matrix_iter(border=4)), dtype=np.uint8);"
            "img = np.kron(np.where(m == 1, 0, 255).astype(np.uint8), np.ones((8, 8), np.uint8));"
            "qr.zxingcpp = types.SimpleNamespace(read_barcodes=lambda *a, **k: [types.SimpleNamespace(valid=False)]);"
            "d = qr.QrDecoder(); before = 'pyzbar' in sys.modules; texts = d.decode(img);"
            "assert not before and d.fallbacks == 1 and texts == ['FALLBACK-PROBE'], (before, d.fallbacks, texts)")
    assert "pyzbar" in _loaded(code)


def test_the_camera_process_gets_the_leaner_allocator_unless_its_environment_says_otherwise() -> None:
    from doorphoned.camera.feature import process_env

    env = process_env({"PATH": "/bin", "MALLOC_ARENA_MAX": "8"})
    assert env == {"PATH": "/bin", "MALLOC_ARENA_MAX": "8", "MALLOC_TRIM_THRESHOLD_": "131072"}


def test_the_monitor_stream_s_gstreamer_loads_without_pygobject_s_cairo_bridge() -> None:
    code = ("sys.modules.setdefault('gi._gi_cairo', None);"
            "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
            "from gi.repository import Gst, GstRtspServer; Gst.init(None); GstRtspServer.RTSPServer.new();"
            "assert 'cairo' not in sys.modules")
    _loaded(code)
