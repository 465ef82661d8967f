"""The camera: one capture, its frames fanned out to every consumer (``core/frames.py``)."""
