"""Face recognition in a worker process (later issue)."""
