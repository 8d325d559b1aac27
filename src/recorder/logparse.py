"""Metrics from the lines a script prints: what `recorder run` reads its stdout with.

The default patterns, tried on every complete line of stdout:

- `name: number` and `name=number`: `loss: 0.25`, `lr=1e-3`, a printed dict
  (`{'loss': 0.69, 'epoch': 0.5}`, values quoted or not), Keras' `- val_loss: 0.1290`;
- `name number` in a cell between `|` bars or tabs: `| epoch   2 |`, `| ms/batch  7.97 |`,
  `Loss 6.9e+00 (7.1e+00)` (the running average in parentheses is left out).

A name is one to four words, each a letter then letters, digits or `_ . / @ -`, kept whole
(`valid loss`, `Acc@1`, `ms/batch`). A name holding a small word of prose (`of`, `the`,
`at`, ... see PROSE_WORDS) is not a metric: `| end of epoch 1 |` gives none. A value is an
int, a float, `nan` or `inf`; a unit written right after it is dropped (`28.25s`, `7.9ms`,
`99%`); a number followed by `/` or `:` is a count or a clock, not a value (`50/389`,
`00:10`). Lines starting with `Namespace(` (a printed argparse result: the config, not a
metric) are skipped, and so is a value that is a known secret (`is_secret`: `recorder run`
asks the run's Redactor), whatever its name.

A metric's step is the number of times it appeared before (0, 1, 2, ...).

Custom patterns (`--metric-pattern`): a regex with named groups `name` and `value`, or
`NAME=REGEX` whose regex has a `value` group (`val_loss=valid loss\\s+(?P<value>\\S+)`).
The value group is read as a number the same way (a unit after it is dropped).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import LaunchError
from .output import PassThrough

PROSE_WORDS = frozenset({
    "a", "an", "the", "of", "at", "in", "on", "to", "for", "from", "by", "with", "into",
    "after", "before", "during", "since", "until", "and", "or", "is", "are", "was", "were",
    "be", "been", "has", "have", "had",
})
PARTIAL_LIMIT = 1 << 16  # characters kept of a line still being written

_WORD = r"[^\W\d][\w./@-]*"
_NAME = rf"{_WORD}(?: {_WORD}){{0,3}}"
_NUMBER = (r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
           r"|[-+]?(?i:nan|inf(?:inity)?)(?![A-Za-z])")
_UNIT = r"(?:%|[A-Za-zµ]{1,8}(?:/[A-Za-z]{1,8})?)?"
_END = r"(?=$|[\s|,;)\]}'\"]|\.(?:\s|$))"
# a cell: after `|`, a tab or the line's start, up to the next `|`, tab or the line's end
_CELL = (rf"(?:(?<=[|\t])|^)[ ]*(?P<cname>{_NAME})[ \t]+(?P<cvalue>{_NUMBER}){_UNIT}"
         rf"(?:[ ]*\([^()|\t]*\))?[ ]*(?=[|\t]|$)")
_PAIR = (rf"(?<![\w./@-])['\"]?(?P<kname>{_NAME})['\"]?[ \t]*[:=][ \t]*['\"]?"
         rf"(?P<kvalue>{_NUMBER}){_UNIT}['\"]?{_END}")
DEFAULT_PATTERN = re.compile(f"{_CELL}|{_PAIR}")
_VALUE = re.compile(rf"\s*['\"]?(?P<value>{_NUMBER}){_UNIT}['\"]?\s*$")
_MAYBE = re.compile(r"\d|(?i:nan|inf)").search  # a line without these holds no value


@dataclass(frozen=True)
class MetricPattern:
    """A custom pattern: `regex` finds values; `name` is fixed, or None for a `name` group."""

    spec: str  # as given on the command line
    regex: re.Pattern[str]
    name: str | None = None


def compile_pattern(spec: str) -> MetricPattern:
    """`REGEX` (groups `name` and `value`) or `NAME=REGEX` (group `value`), or a LaunchError
    saying what is accepted."""
    problem = "it has no (?P<name>...) and (?P<value>...) groups"
    try:
        whole = re.compile(spec)
        if {"name", "value"} <= set(whole.groupindex):
            return MetricPattern(spec, whole)
    except re.error as exc:
        problem = f"it is not a regular expression ({exc})"
    name, eq, regex = spec.partition("=")
    if eq and name.strip() and not re.search(r"[\\()\[\]{}*+?|^$]", name):
        try:
            compiled = re.compile(regex)
            if "value" in compiled.groupindex:
                return MetricPattern(spec, compiled, name.strip())
            problem = f"{regex!r} has no (?P<value>...) group"
        except re.error as exc:
            problem = f"{regex!r} is not a regular expression ({exc})"
    raise LaunchError(f"--metric-pattern {spec!r}: {problem}; give a regex with groups "
                      "(?P<name>...) and (?P<value>...), or NAME=REGEX with a (?P<value>...) "
                      r"group, e.g. 'val_loss=valid loss\s+(?P<value>\S+)'")


def number(text: str) -> int | float | None:
    """`text` read as an int or float, a trailing unit dropped; None when it is not one."""
    match = _VALUE.match(text)
    if match is None:
        return None
    return _number(match.group("value"))


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


class MetricParser:
    """Turns lines into metric points: `feed(line)` calls `log(name, value, step)` for each."""

    def __init__(self, log: Callable[[str, int | float, int], object],
                 patterns: Sequence[MetricPattern] = (), defaults: bool = True,
                 is_secret: Callable[[str], bool] | None = None):
        self.log = log
        self.patterns = list(patterns)
        self.defaults = defaults
        self.is_secret = is_secret
        self.counts: dict[str, int] = {}
        self._prose: dict[str, bool] = {}  # name -> holds a prose word, cached

    def parse(self, line: str) -> list[tuple[str, int | float]]:
        """The (name, value) pairs in one line, in order."""
        line = line.rstrip("\r\n")
        if "\r" in line:  # a progress bar redrawn in place: what the terminal shows
            line = line.rpartition("\r")[2]
        if not _MAYBE(line) or line.startswith("Namespace("):
            return []
        found = []
        if self.defaults:
            for match in DEFAULT_PATTERN.finditer(line):
                name, value = match.group("cname", "cvalue")
                if name is None:
                    name, value = match.group("kname", "kvalue")
                elif match.start() == 0 and match.end() == len(line):
                    continue  # `name number` alone on a line, no bar or tab: prose
                if not self._is_prose(name) and not self._secret(value):
                    found.append((name, _number(value)))
        for pattern in self.patterns:
            for match in pattern.regex.finditer(line):
                name = (pattern.name or match.group("name") or "").strip()
                text = match.group("value") or ""
                value = number(text)
                if name and value is not None and not self._secret(text.strip()):
                    found.append((name, value))
        return found

    def feed(self, line: str) -> None:
        for name, value in self.parse(line):
            step = self.counts.get(name, 0)
            self.counts[name] = step + 1
            self.log(name, value, step)

    def _is_prose(self, name: str) -> bool:
        prose = self._prose.get(name)
        if prose is None:
            prose = self._prose[name] = bool(PROSE_WORDS.intersection(name.lower().split()))
        return prose

    def _secret(self, text: str) -> bool:
        return self.is_secret is not None and self.is_secret(text)


class MetricLines(PassThrough):
    """A text stream passed through unchanged; each complete line written to it is handed to
    `on_line` (in the writing thread; an exception there is dropped: the script's print never
    fails because of the recorder). `close()` hands over the unfinished last line."""

    def __init__(self, stream, on_line: Callable[[str], object]):
        super().__init__(stream, self._take_open)
        self._on_line = on_line
        self._partial = ""
        self._lock = threading.Lock()
        self._open = True

    def _take_open(self, text: str) -> None:
        if self._open:
            self._take(text)

    def close(self) -> None:
        """Stop reading; the last line, if unfinished, is read as it is. The stream stays open."""
        with self._lock:
            self._open, rest, self._partial = False, self._partial, ""
        if rest:
            self._hand(rest)

    def _take(self, text: str) -> None:
        with self._lock:
            if "\n" not in text:
                if "\r" in text:
                    self._partial = text.rpartition("\r")[2]
                elif len(self._partial) < PARTIAL_LIMIT:
                    self._partial += text
                return
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()[-PARTIAL_LIMIT:]
        for line in lines:
            self._hand(line)

    def _hand(self, line: str) -> None:
        try:
            self._on_line(line)
        except Exception:  # noqa: BLE001, S110 - never break the script's output
            pass
