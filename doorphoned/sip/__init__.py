"""SIP calls through pjsua2 (issue: SIP calls). Nothing here yet: the spine runs without it."""
