"""The server's limits on what one person may ask of it (options in Settings → Server; 0 = no limit).
The pixels of one request are limited by the older `generation_max_pixels` (processing/checks.py).

A request over a limit is refused before anything is queued, with a message that names the limit
and its value: HTTP 429 for a full queue or too many training runs, 422 for a request too large.
"""
from __future__ import annotations

from typing import Any

QUEUED_PER_USER = "queue_max_jobs_per_user"
IMAGES_PER_REQUEST = "max_images_per_request"
TRAINING_AT_ONCE = "max_training_jobs"


class LimitError(ValueError):
    """A request over one of the server's limits; `status` is the HTTP answer (429 or 422)."""

    def __init__(self, message: str, status: int = 429) -> None:
        super().__init__(message)
        self.status = status


def limit_value(settings: Any, key: str) -> float:
    """The option's value, 0 (no limit) when unset or unreadable."""
    try:
        return max(0.0, float(settings.get(key) or 0))
    except (TypeError, ValueError):
        return 0.0


def check_request_size(settings: Any, batch_size: int, n_iter: int) -> None:
    """Images (batch size × batch count) of one request."""
    images = max(1, int(batch_size or 1)) * max(1, int(n_iter or 1))
    max_images = limit_value(settings, IMAGES_PER_REQUEST)
    if max_images and images > max_images:
        raise LimitError(f"{images} images requested (batch size × batch count): over the server's limit of "
                         f"{int(max_images)} images per request ({IMAGES_PER_REQUEST})", 422)
