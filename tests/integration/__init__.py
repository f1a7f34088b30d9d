"""Integration tests: every adapter family proven against raw HF on tiny random models."""
