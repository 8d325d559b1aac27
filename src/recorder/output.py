"""stdout and stderr still reach the terminal; the run keeps their tail.

A Python-level tee: output written by child processes or C code straight to the
file descriptors reaches the terminal but is not kept.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

TAIL_CHARS = 100_000


class OutputTail:
    """Tees sys.stdout and sys.stderr into one tail of at most `limit` characters."""

    def __init__(self, limit: int = TAIL_CHARS):
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._originals: tuple | None = None
        self.version = 0  # bumped on every write: the heartbeat sends the tail only if it moved

    def start(self) -> None:
        self._originals = (sys.stdout, sys.stderr)
        sys.stdout = PassThrough(sys.stdout, self.add)
        sys.stderr = PassThrough(sys.stderr, self.add)

    def stop(self) -> None:
        if self._originals is None:
            return
        if isinstance(sys.stdout, PassThrough) and sys.stdout.seen == self.add:
            sys.stdout = self._originals[0]
        if isinstance(sys.stderr, PassThrough) and sys.stderr.seen == self.add:
            sys.stderr = self._originals[1]
        self._originals = None

    def add(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            self.version += 1
            if self._size > 2 * self.limit:
                self._compact()

    def text(self) -> str:
        with self._lock:
            self._compact()
            return self._parts[0] if self._parts else ""

    def _compact(self) -> None:
        joined = "".join(self._parts)[-self.limit:]
        self._parts = [joined]
        self._size = len(joined)


class PassThrough:
    """A text stream that writes through to `stream` and shows each text to `seen`:
    everything else (fileno, isatty, encoding, buffer, ...) is the stream's own."""

    def __init__(self, stream, seen: Callable[[str], object]):
        self.stream = stream
        self.seen = seen

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        if type(text) is str and text:
            self.seen(text)
        return written

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)
