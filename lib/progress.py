"""What a running notebook is doing, shown on the console of the build that runs it.

    progress.stage("training base gpt")                 # one line now
    tick = progress.Ticker("base gpt", total=1200)      # a line at most every few seconds:
    for step in range(1200):                            #   base gpt  step 400/1200  3.4k tok/s  eta 4m
        ...
        tick.update(tokens=batch.numel())

`python -m lib.run` gives each kernel a file in `STUDY_PROGRESS` (an absolute path; other values are ignored, so
`STUDY_PROGRESS=1` typed by hand never litters the working directory); lines appended to it are printed on the build's
console, prefixed with the notebook's name. Without that variable (a notebook opened in Jupyter) nothing is written:
the page keeps its own tqdm bars. Warnings raised in the kernel (a corrupt artifact rebuilt, a precision fallback)
are copied to the same file, so they reach the console although the book strips a cell's stderr.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

INTERVAL = 10.0  # seconds between two progress lines of one loop
MIN_LOOP = 5.0  # a loop shorter than this never prints
THREADS_EVERY = 2.0  # seconds between two looks at the thread allowance
_threads_checked = 0.0


def _path() -> str | None:
    """The build's progress file: an absolute path (as lib.run sets it); anything else ("1", "0") is no file."""
    path = os.environ.get("STUDY_PROGRESS") or ""
    return path if os.path.isabs(path) else None


def write(line: str) -> None:
    """Append one line to the build's progress file (nothing when there is none)."""
    path = _path()
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.replace("\n", " ") + "\n")


def stage(text: str) -> None:
    """Say which stage the notebook has reached."""
    write(text)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def sync_threads(force: bool = False) -> None:
    """Take up the number of torch threads the build allows this kernel now. `lib.run` rewrites the allowance
    (`STUDY_THREADS_FILE`) whenever a notebook starts or finishes, so a kernel left alone on the machine uses every
    core. Called from the main thread's hot loops (training steps, hooked forward passes); looks at most every
    THREADS_EVERY seconds; does nothing outside a build or before torch is imported."""
    global _threads_checked
    path = os.environ.get("STUDY_THREADS_FILE")
    now = time.monotonic()
    if not path or (not force and now - _threads_checked < THREADS_EVERY):
        return
    _threads_checked = now
    torch = sys.modules.get("torch")
    try:
        n = int(Path(path).read_text())
    except (OSError, ValueError):
        return
    if torch is not None and n >= 1 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


class Ticker:
    """Progress of one loop of `total` units: `update()` after each; a line every INTERVAL seconds once the loop
    has run MIN_LOOP seconds, and a last one from `close()` when the loop printed anything."""

    def __init__(self, desc: str, total: int, unit: str = "step", interval: float = INTERVAL):
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.done, self.tokens = 0, 0
        self.start = self.last = time.perf_counter()
        self.printed = False
        self.enabled = _path() is not None

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        parts = [self.desc, f"{self.unit} {self.done}/{self.total}"]
        if self.tokens:
            parts.append(f"{_rate(self.tokens / elapsed)} tok/s")
        if 0 < self.done < self.total:
            parts.append(f"eta {_duration(elapsed / self.done * (self.total - self.done))}")
        elif self.done >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        return "  ".join(parts)

    def update(self, n: int = 1, tokens: int = 0) -> None:
        self.done += n
        self.tokens += tokens
        if not self.enabled:
            return
        sync_threads()
        now = time.perf_counter()
        if now - self.start >= MIN_LOOP and now - self.last >= self.interval:
            self.last, self.printed = now, True
            write(self.line(now))

    def close(self) -> None:
        if self.enabled and self.printed:
            write(self.line(time.perf_counter()))


_show_warning = warnings.showwarning


def _copy_warning(message, category, filename, lineno, file=None, line=None):
    write(f"warning: {category.__name__}: {message}")
    _show_warning(message, category, filename, lineno, file, line)


def copy_warnings() -> None:
    """Copy every warning shown in this process to the progress file (idempotent)."""
    if _path() is not None and warnings.showwarning is not _copy_warning:
        warnings.showwarning = _copy_warning
