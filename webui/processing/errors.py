"""Errors a generation job reports to the user (the API answers them with a 4xx)."""
from __future__ import annotations


class GenerationError(ValueError):
    """Bad request: the message tells the user what to change (API answers 4xx)."""
