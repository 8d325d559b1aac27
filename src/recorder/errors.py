"""Errors a user can cause.

    RecorderError            base of everything a user can cause and fix
    ├── ConfigError          a config key or value that cannot be used
    ├── StoreError           a store URL that cannot be used
    ├── RunNotFound          a run reference that names no run
    └── NoActiveRun          recorder.log/artifact called outside a run

Failures of the database itself are not errors for the user's code: they are
spooled to disk and reported as warnings.
"""


class RecorderError(Exception):
    """Base of the errors a user causes; the message names the bad value."""


class ConfigError(RecorderError):
    pass


class StoreError(RecorderError):
    pass


class RunNotFound(RecorderError):
    pass


class NoActiveRun(RecorderError):
    pass
