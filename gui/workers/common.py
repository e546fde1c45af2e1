"""What every task of the GUI core shares: the logger, the one-line error text, the cancellation
signal a progress callback raises."""

from __future__ import annotations

from labqfl.errors import LabqflError
from labqfl.log import get_logger

log = get_logger("labqfl.gui")


class Cancelled(Exception):
    """Raised inside a worker (from a progress callback) to stop it at a safe point."""


def one_line(exc: BaseException) -> str:
    """``exc`` as one line of text: its message's first line (with the type unless a LabqflError)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and not isinstance(exc, LabqflError) else (text[0] if text else type(exc).__name__)
