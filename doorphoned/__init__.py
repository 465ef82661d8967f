"""doorphoned: the firmware daemon of a Linux door phone (door intercom + access control)."""

__version__ = "0.1.0"
