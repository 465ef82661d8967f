"""The core: what every feature stands on, knowing no feature."""
