"""A1111's `modules.errors`: report an exception with its traceback in the log (`report`,
`display`, `display_once`, `print_error_explanation`, `run`)."""
from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, Callable

log = logging.getLogger("extensions")
_shown: set[str] = set()


def report(message: str, *, exc_info: bool = False) -> None:
    text = f"{message}\n{traceback.format_exc()}" if exc_info and sys.exc_info()[0] is not None else message
    log.error("%s", text)


def print_error_explanation(message: str) -> None:
    log.error("%s", message)


def display(e: BaseException, task: str, *, full_traceback: bool = False) -> None:
    log.error("%s: %s\n%s", task, type(e).__name__,
              "".join(traceback.format_exception(type(e), e, e.__traceback__)))


def display_once(e: BaseException, task: str) -> None:
    if task in _shown:
        return
    _shown.add(task)
    display(e, task)


def run(code: Callable[[], Any], task: str) -> None:
    try:
        code()
    except Exception as e:  # noqa: BLE001 - A1111's contract: log and go on
        display(e, task)

__all__ = [
    "display", "display_once", "print_error_explanation", "report", "run"
]
