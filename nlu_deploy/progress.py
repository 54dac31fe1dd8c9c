"""Progress of long work that reaches a person wherever they look: a tqdm bar in a terminal,
plain timed lines on stderr without one (CI, nohup, a scheduler's log), and always a log file."""

from __future__ import annotations

import sys
import time
from pathlib import Path


class ProgressLog:
    """Lines for people. `every_seconds` limits the periodic lines written without a terminal
    (a terminal has the bar); `line()` always writes."""

    def __init__(self, log_file: Path | None, terminal: bool, every_seconds: float = 30.0, enabled: bool = True):
        self.log_file, self.terminal, self.every, self.enabled = log_file, terminal, every_seconds, enabled
        self._last = time.monotonic()
        if enabled and log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        if self.terminal:
            from tqdm.auto import tqdm

            tqdm.write(text)
        else:
            print(stamped, file=sys.stderr, flush=True)
        if self.log_file is not None:
            with self.log_file.open("a", encoding="utf-8") as handle:
                handle.write(stamped + "\n")
        self._last = time.monotonic()

    def due(self) -> bool:
        """Whether a periodic line is due (never in a terminal, where the bar shows it)."""
        return self.enabled and not self.terminal and time.monotonic() - self._last >= self.every

    def periodic(self, text: str) -> None:
        if self.due():
            self.line(text)
