"""Errors a generation job reports to the user (the API answers them with a 4xx)."""
from __future__ import annotations


class GenerationError(ValueError):
    """Bad request: the message tells the user what to change (API answers 4xx)."""


# torch's wording when two tensors do not fit: a file whose weights disagree with the architecture
# read from it (or a damaged file) fails this way deep inside a layer
_SHAPE_ERRORS = ("shapes cannot be multiplied", "size of tensor", "must match the size",
                 "doesn't match the broadcast shape", "is invalid for input of size", "Given groups=",
                 "but got input of size", "channels, but got")


def shape_mismatch_error(model_file: str, exc: BaseException) -> GenerationError | None:
    """A GenerationError naming the model file for a tensor-shape RuntimeError, else None."""
    msg = str(exc)
    if not isinstance(exc, RuntimeError) or not any(s in msg for s in _SHAPE_ERRORS):
        return None
    return GenerationError(f"{model_file} cannot run: its weights do not fit the architecture read from "
                           f"the file ({msg.splitlines()[0] if msg else type(exc).__name__}). The file may be "
                           f"damaged or a variant this web UI does not support; choose another checkpoint.")
