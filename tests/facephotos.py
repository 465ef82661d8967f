"""The test photos of face_recognition's source distribution (obama*.jpg, biden.jpg), fetched once into a cache.

They are not committed (we may not redistribute them): the first test that needs them runs
``pip download face_recognition==1.3.0 --no-deps --no-binary :all:`` and extracts ``tests/test_images/``
into ``var/face-test-images`` (git-ignored). Concurrent test workers race safely: each extracts into its own
temporary folder and the first rename wins.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DOORPHONE_FACE_PHOTOS", ROOT / "var" / "face-test-images"))
SDIST = "face_recognition==1.3.0"


def photos() -> Path:
    """The folder holding obama.jpg, obama2.jpg, obama3.jpg, biden.jpg, ... (downloaded on first use)."""
    if (CACHE / "obama.jpg").exists():
        return CACHE
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
                        "-q", "-d", tmp], check=True, timeout=300)
        archive = next(Path(tmp).glob("face_recognition-*.tar.gz"))
        out = Path(tmp) / "images"
        out.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if "/tests/test_images/" in member.name and member.isfile() and "/" not in member.name.split(
                        "/tests/test_images/")[1]:
                    source = tar.extractfile(member)
                    assert source is not None
                    (out / Path(member.name).name).write_bytes(source.read())
        try:
            out.rename(CACHE)
        except OSError:
            if not (CACHE / "obama.jpg").exists():
                raise
    return CACHE


def photo(name: str) -> bytes:
    return (photos() / name).read_bytes()


if __name__ == "__main__":
    print(photos())
