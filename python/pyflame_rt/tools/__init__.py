"""Command-line tools of PyFlameRT (pyflame-convert)."""
