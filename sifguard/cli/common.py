"""Shared CLI plumbing: argument parser that fails in one line, progress bar, output."""

from __future__ import annotations

import argparse
import json
import sys
import time

from sifguard.errors import BadInputError

PROGRESS_THRESHOLD = 256 << 20


class UsageError(BadInputError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message} (see --help)")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


class ProgressBar:
    """A progress bar on stderr for large images, only when stderr is a terminal.

    Sized by the bytes the command will hash; the image is only looked at for that when a
    bar can be drawn at all (never in hooks, pipes or CI)."""

    def __init__(self, image: str, label: str):
        self.label, self.done, self._last = label, 0, 0.0
        self.total = image_size(image) if sys.stderr.isatty() else 0
        self.enabled = self.total > PROGRESS_THRESHOLD

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        frac = min(1.0, self.done / self.total)
        width = 30
        bar = "#" * int(frac * width)
        sys.stderr.write(f"\r{self.label} [{bar:<{width}}] {frac * 100:5.1f}% "
                         f"{self.done >> 20}/{self.total >> 20} MiB")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.done < self.total:
            sys.stderr.write("\n")


def image_size(path: str) -> int:
    """Bytes a sign/verify of this image hashes: its grouped objects (0 when unreadable;
    the command itself then reports the problem)."""
    from sifguard.sif.image import SifImage
    try:
        with SifImage(path) as img:
            return sum(d.size for d in img.objects if d.group_id)
    except Exception:  # noqa: BLE001 - only sizes a progress bar
        return 0
