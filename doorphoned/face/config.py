"""The ``[face]`` section: face recognition on the shared camera (issue 12; docs/face.md).

The threshold is a Euclidean distance between face_recognition encodings: lower is stricter. The default
(0.5) is stricter than face_recognition's own 0.6; docs/face.md gives the false accepts and rejects measured
at it on the test photos.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from doorphoned.core.config import ConfigError, Source, setting

LIVENESS_MODULE = "doorphoned.face.liveness"


@dataclass(frozen=True)
class FaceConfig:
    enabled: bool = setting(False, doc="Face recognition on the camera's frames (needs `camera.enabled`): a "
                            "recognised face is presented to the access gate as credential `face`.")
    doors: tuple[int, ...] = setting([1], doc="The door(s) the camera serves: a recognised face requests these.")
    threshold: float = setting(0.5, doc="Largest distance between a face and a user's template that still "
                               "matches (face_recognition's measure; lower is stricter; see docs/face.md for the "
                               "error rates measured).", min=0.2, max=0.6)
    margin: float = setting(0.1, doc="How much further the second-nearest user must be than the nearest "
                            "(a face between two users matches neither).", min=0.0, max=0.5)
    k: int = setting(2, doc="Frames among the last `n` that must name the same user before the gate decides.",
                     min=1, max=10)
    n: int = setting(3, doc="Frames the vote looks back over (see `k`).", min=1, max=20)
    max_fps: float = setting(4.0, doc="Frames a second the worker looks at, at most, while the camera is active.",
                             min=0.2, max=15)
    detect_scale: float = setting(0.5, doc="Frames are scaled by this before face detection (HOG): smaller is "
                                  "faster but misses small faces; the encoding uses the full frame.",
                                  min=0.2, max=1.0)
    min_eye_distance: float = setting(40.0, doc="Enrolment: least pixels between the eyes' centres.", min=10,
                                      max=1000)
    min_sharpness: float = setting(20.0, doc="Enrolment: least variance of the Laplacian of the face (blur).",
                                   min=0, max=10000)
    min_brightness: float = setting(40.0, doc="Enrolment: least mean grey level of the face, 0-255 (dark).",
                                    min=0, max=255)
    liveness: str = setting("off", doc="`on`: a face must pass the liveness check (blink / head motion) over the "
                            "frames it was seen in before it opens; `off`: no check.")
    liveness_blink_dip: float = setting(0.4, doc="Liveness: how far the eye aspect ratio (the lids' opening over "
                                        "the eye's width) must fall below its level before and after, as a "
                                        "fraction of its highest level, to count as a blink (lower: more "
                                        "lenient; a photo's jitters by up to 0.2).", min=0.25, max=0.9)
    liveness_parallax: float = setting(0.048, doc="Liveness: how far the nose must move off the plane of the rest "
                                       "of the face (spread, in inter-eye distances) to count as a head turning "
                                       "(a photo or screen held up measured up to 0.039, a live face from "
                                       "0.057).", min=0.02, max=0.3)
    liveness_patience_s: float = setting(6.0, doc="Liveness: seconds a recognised face is watched for a blink or "
                                         "a head turn before it is refused `liveness` (people blink every 2-10 "
                                         "s).", min=2.0, max=60.0)
    liveness_screen: bool = setting(True, doc="Liveness: refuse a face whose frames show a screen's pixel grid "
                                    "(moire: a phone or tablet replaying a video of the user), reason `screen`.")
    liveness_screen_threshold: float = setting(15.0, doc="Liveness: the median screen score (largest spectral "
                                               "peak of the face region over its ring's median) from which a "
                                               "face is on a screen; live faces measured 3.5-7, screens 40 and "
                                               "more (see docs/face.md).", min=8.0, max=200.0)
    cooldown_s: float = setting(5.0, doc="Seconds after a decision before the same user is presented again.",
                                min=0, max=600)
    keep_photos: bool = setting(False, doc="Keep each enrolment photo that produced a template, for audit "
                                "(`doorphonectl face photo`): sealed with the device key under "
                                "`<state_dir>/face-photos/` (0600 files, 0700 folder), removed with the template "
                                "or the user. Off: a photo never touches the disk.")
    photos_keep_count: int = setting(1000, doc="Kept enrolment photos, at most (the oldest go first).", min=1,
                                     max=100000)
    photos_keep_bytes: int = setting(200 * 2**20, doc="Bytes of kept enrolment photos, at most (the oldest go "
                                     "first).", min=64 * 1024, max=2**40)
    photos_keep_days: float = setting(365.0, doc="Days an enrolment photo is kept, at most (its template stays).",
                                      min=0.01, max=3650)
    photos_min_free_bytes: int = setting(64 * 2**20, doc="With `keep_photos`, an enrolment whose photos would "
                                         "leave less free space than this on the state disk is refused (every "
                                         "template has its photo, and the disk never fills).", min=0, max=2**40)

    def validate(self, source: Source) -> None:
        if self.k > self.n:
            raise ConfigError("face.k", f"must be at most face.n ({self.n})", source.where("face.k"))
        if self.liveness not in ("off", "on"):
            raise ConfigError("face.liveness", "must be off or on", source.where("face.liveness"))
        if self.liveness == "on" and importlib.util.find_spec(LIVENESS_MODULE) is None:
            raise ConfigError("face.liveness", "on needs the liveness check, which this build does not have",
                              source.where("face.liveness"))
        if not self.doors or len(set(self.doors)) != len(self.doors):
            raise ConfigError("face.doors", "must list one or more distinct doors", source.where("face.doors"))

    def validate_doors(self, door_ids: frozenset[int], source: Source) -> None:
        missing = sorted(set(self.doors) - door_ids)
        if self.enabled and missing:
            raise ConfigError("face.doors", f"door(s) {missing} are not configured", source.where("face.doors"))

    def worker_settings(self) -> dict[str, Any]:
        """The recognition worker's ``configure`` op."""
        return {"threshold": self.threshold, "margin": self.margin, "k": self.k, "n": self.n,
                "max_fps": self.max_fps, "detect_scale": self.detect_scale, "liveness": self.liveness == "on",
                "min_eye_distance": self.min_eye_distance, "min_sharpness": self.min_sharpness,
                "min_brightness": self.min_brightness, "liveness_blink_dip": self.liveness_blink_dip,
                "liveness_parallax": self.liveness_parallax, "liveness_patience_s": self.liveness_patience_s,
                "liveness_screen": self.liveness_screen,
                "liveness_screen_threshold": self.liveness_screen_threshold}
