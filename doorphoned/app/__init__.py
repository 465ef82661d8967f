"""The composition root: the daemon, its features in order, and its entry point."""
