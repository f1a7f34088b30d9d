"""benchmarks layer (see DESIGN.md)."""
