"""dictionary layer (see DESIGN.md)."""
