"""activations layer (see DESIGN.md)."""
