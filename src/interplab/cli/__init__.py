"""Thin command-line front end."""
