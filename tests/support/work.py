"""Counting work instead of timing it: the lines of burrow's own source a piece of code runs.

Wall time on a machine shared with other tests is no measure of cost; the number of lines run
(``sys.settrace`` sees every loop iteration) is exact and repeatable, so a test can show that
a cost grows linearly, or not at all, with the size of its input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import burrow

SOURCE = str(Path(burrow.__file__).resolve().parent)


class LineCounter:
    """Counts the lines of burrow's own source run while it is on (in this thread)."""

    def __init__(self) -> None:
        self.lines = 0

    def _trace(self, frame: FrameType, event: str, _arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(SOURCE):
            return None
        if event == "line":
            self.lines += 1
        return self._trace

    def __enter__(self) -> LineCounter:
        self._previous = sys.gettrace()
        sys.settrace(self._trace)
        return self

    def __exit__(self, *_exc: object) -> None:
        sys.settrace(self._previous)
