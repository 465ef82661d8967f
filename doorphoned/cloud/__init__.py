"""The MQTT v5 cloud link (issue: cloud link)."""
