"""Doors: lock drivers (GPIO relay, HTTP lock bridge), door-status sensors, exit buttons, tamper, alarms."""
