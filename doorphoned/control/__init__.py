"""The installer control socket (server side) used by doorphonectl."""
