"""Provenance of a run (the implementation lives in ``interplab.core.artifacts``)."""

from __future__ import annotations

from interplab.core.artifacts import git_commit, now, provenance

__all__ = ["git_commit", "now", "provenance"]
