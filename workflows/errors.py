"""Errors of the workflows that the ``msa`` command line reports as one-line messages."""

from __future__ import annotations

__all__ = ["SearchInterrupted", "NoTrialReported", "ResultsFolderError"]


class SearchInterrupted(Exception):
    """The search stopped before every trial finished (Ctrl-C); its state is saved."""


class NoTrialReported(RuntimeError):
    """No trial of a search reported its metric (every trial failed)."""


class ResultsFolderError(RuntimeError):
    """A results folder that may not be reused, replaced or deleted as asked."""
