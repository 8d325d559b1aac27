"""Keep secrets out of the store: everything recorded about a run passes through a `Redactor`.

The rules, as a user can check them:

- A *name* (environment variable, config key, command-line option) looks secret when,
  lower-cased with `-`, `_`, `.` and spaces removed, it contains one of `secret`, `password`,
  `passwd`, `apikey`, `accesskey`, `privatekey` or `credential` (so `AWS_SECRET_ACCESS_KEY`,
  `DB_PASSWORD`, `--api-key`, `db.password` match).
- `token` and `auth` are common inside harmless ML names (`max_tokens`, `tokenizer`,
  `author`), so they count only as whole parts of a name, the parts being split at `-`, `_`,
  `.`, spaces, digits and camelCase humps:
  - `token`: a part is `token` or ends with it (`GITHUB_TOKEN`, `HF_TOKEN`, `authToken`,
    Terraform's `TF_TOKEN_app_example_com`), unless the part before names a tokenizer's
    special token (`pad_token`, `eos_token_id`, `mask_token`...) or the part after is one
    of `TOKEN_MODEL_WORDS` (`token_dropout`, `token_type_ids`, `token_embedding`);
    `max_tokens`, `tokenizer`, `TOKENIZERS_PARALLELISM` do not match;
  - `auth`: any part is `auth`/`oauth`, ends with `auth` (`basicauth`), or begins with
    `authoriz`, `authoris` or `authent` (`HF_AUTH`, `auth_header`, `Authorization`);
    `author`, `authors`, `authority` do not match.
- `pass` alone is not a secret word (`DB_PASS` does not match: `first_pass`, `forward_pass`
  are config names too); `DB_PASSWORD` does.
- A value under a secret-looking name is replaced by `REDACTED`, except `None`, `""` and
  booleans, which hide nothing (`use_auth_token=True` stays as it is).
- Passwords in URLs, `scheme://user:password@host`, are masked as `scheme://user:***@host`
  anywhere in recorded text.
- Every secret value seen (from the environment, the config, argv or a URL password) is
  remembered, and `Redactor.text` replaces it by `REDACTED` wherever it shows up later
  (captured output, tracebacks). Values shorter than 4 characters and the words `true`,
  `false`, `none` and `null` are not remembered: masking them would garble everything.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = [
    "REDACTED",
    "SECRET_NAME_WORDS",
    "TOKEN_MODEL_WORDS",
    "Redactor",
    "looks_secret",
    "mask_url_passwords",
]

REDACTED = "<redacted>"

_SUBSTRING_WORDS = (
    "secret",
    "password",
    "passwd",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
)
_PART_WORDS = ("token", "auth")
SECRET_NAME_WORDS: tuple[str, ...] = _SUBSTRING_WORDS + _PART_WORDS
"""The words that make a name look secret (the module docstring says how each matches)."""

_TOKENIZER_SPECIAL = frozenset(
    {"pad", "bos", "eos", "unk", "sep", "cls", "mask", "start", "end", "special", "sos"}
)
TOKEN_MODEL_WORDS = frozenset(
    [
        "id",
        "ids",
        "type",
        "types",
        "dropout",
        "drop",
        "embedding",
        "embeddings",
        "emb",
        "dim",
        "len",
        "length",
        "count",
        "limit",
        "budget",
        "size",
        "level",
        "mixing",
    ]
)
"""After `token`, these words make a name a model's setting (`token_dropout`), not a secret."""
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_SEPARATORS = re.compile(r"[-_.\s]+")
_AUTH_PREFIXES = ("authoriz", "authoris", "authent")
_MIN_SECRET_LEN = 4
_NOT_SECRETS = frozenset({"true", "false", "none", "null"})

# `://user:password@`: anchored on `://` (not the scheme) so a long run of letters cannot make
# the search quadratic; the user stops at `/` and whitespace, the password at whitespace and
# after 256 characters, so each try is short. A password may hold `/` and `@` (unescaped, as
# people type them: pymongo refuses such a URL, and the error message must not show it).
_URL_PASSWORD = re.compile(r"://([^\s:/@]*):(\S{1,256})@")


def _name_parts(name: str) -> list[str]:
    return [p.lower() for p in _PARTS.findall(name)]


def looks_secret(name: str) -> bool:
    """True when a name (env var, config key, option) suggests its value is a secret."""
    compact = _SEPARATORS.sub("", name.lower())
    if any(word in compact for word in _SUBSTRING_WORDS):
        return True
    parts = _name_parts(name)
    if not parts:
        return False
    for i, part in enumerate(parts):
        if part.endswith("auth") or part.startswith(_AUTH_PREFIXES):
            return True
        if part.endswith("token"):
            before = part[: -len("token")] or (parts[i - 1] if i > 0 else "")
            after = parts[i + 1] if i + 1 < len(parts) else ""
            if before not in _TOKENIZER_SPECIAL and after not in TOKEN_MODEL_WORDS:
                return True
    return False


def mask_url_passwords(text: str) -> str:
    """Replace the password of every `scheme://user:password@` in text by `***`."""
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(r"://\1:***@", text)


def _url_passwords(text: str) -> list[str]:
    if "://" not in text:
        return []
    found = []
    for match in _URL_PASSWORD.finditer(text):
        password = match.group(2)
        found.append(password)
        decoded = unquote(password)
        if decoded != password:
            found.append(decoded)
    return found


def _hides_nothing(value: Any) -> bool:
    return value is None or value == "" or isinstance(value, bool)


class Redactor:
    """Knows the secret values of one run and removes them from anything recorded."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        # Replaced, never mutated, so `text` can run in the flusher thread while the main
        # thread adds secrets; the lock only orders concurrent adds.
        self._ordered: tuple[str, ...] = ()  # longest first: one containing another wins
        self._compiled: tuple[tuple[str, ...], re.Pattern[str]] | None = None
        self._lock = threading.Lock()
        env = os.environ if environ is None else environ
        for name, value in env.items():
            if looks_secret(name):
                self.add_secret(value)
            for password in _url_passwords(value):
                self.add_secret(password)

    @property
    def secrets(self) -> frozenset[str]:
        """The secret values known so far (for tests and debugging; never record them)."""
        return frozenset(self._ordered)

    def add_secret(self, value: str) -> None:
        """Remember a secret value so `text` removes it; short or trivial values are ignored."""
        if not isinstance(value, str) or len(value) < _MIN_SECRET_LEN:
            return
        if value.lower() in _NOT_SECRETS or value == REDACTED:
            return
        with self._lock:
            if value not in self._ordered:
                self._ordered = tuple(sorted((*self._ordered, value), key=len, reverse=True))

    def text(self, text: str) -> str:
        """Replace every known secret by `REDACTED`, then mask URL passwords."""
        ordered = self._ordered
        # `in` scans are ~7x faster than the alternation, and most text holds no secret.
        if any(secret in text for secret in ordered):
            compiled = self._compiled
            if compiled is None or compiled[0] is not ordered:
                compiled = (ordered, re.compile("|".join(map(re.escape, ordered))))
                self._compiled = compiled
            text = compiled[1].sub(REDACTED, text)
        return mask_url_passwords(text)

    def config(self, config: Any) -> Any:
        """Return a copy of config with secret values redacted and remembered, at any depth."""
        self._collect(config, under_secret=False)
        return self._redacted(config, under_secret=False)

    def _collect(self, value: Any, under_secret: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                self._collect(item, under_secret or looks_secret(str(key)))
        elif isinstance(value, list | tuple):
            for item in value:
                self._collect(item, under_secret)
        elif isinstance(value, str):
            if under_secret:
                self.add_secret(value)
            for password in _url_passwords(value):
                self.add_secret(password)

    def _redacted(self, value: Any, under_secret: bool) -> Any:
        if isinstance(value, Mapping):
            return {
                key: self._redacted(item, under_secret or looks_secret(str(key)))
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            items = [self._redacted(item, under_secret) for item in value]
            if isinstance(value, list):
                return items
            return value._make(items) if hasattr(value, "_make") else tuple(items)
        if under_secret and not _hides_nothing(value):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        return value

    def argv(self, argv: Sequence[str]) -> list[str]:
        """Return argv with the values of secret options redacted and remembered.

        Handles `--api-key X`, `--api-key=X` and `key=X` (with or without dashes); a secret
        option followed by another option (`--token --verbose`) is taken as a flag.
        """
        out = list(argv)
        for i, arg in enumerate(out):
            name, eq, value = arg.partition("=")
            if eq and looks_secret(name.lstrip("-")):
                self.add_secret(value)
                if value:
                    out[i] = f"{name}={REDACTED}"
            elif (
                not eq
                and arg.startswith("-")
                and looks_secret(arg.lstrip("-"))
                and i + 1 < len(out)
                and not out[i + 1].startswith("-")
            ):
                self.add_secret(out[i + 1])
                out[i + 1] = REDACTED
        for arg in out:
            for password in _url_passwords(arg):
                self.add_secret(password)
        return [self.text(arg) for arg in out]

    def environ(self, variables: Mapping[str, str]) -> dict[str, str]:
        """Return environment variables fit to record: secret names redacted, values cleaned."""
        out = {}
        for name, value in variables.items():
            if looks_secret(name) and value:
                self.add_secret(value)
                out[name] = REDACTED
            else:
                out[name] = self.text(value)
        return out
