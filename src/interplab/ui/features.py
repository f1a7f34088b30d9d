"""Feature dashboards' data: the dictionaries whose feature statistics the UI shows (placeholder
registry; filled in below)."""
