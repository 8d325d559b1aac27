"""What a replay found: the plan it ran (or would run) and the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import COULD_NOT_REPLAY, DIVERGED, REPRODUCED, MetricComparison, StatusComparison
from .environment import Difference
from .tree import Tree

DRY_RUN = "dry run"
EXIT_CODES = {REPRODUCED: 0, DRY_RUN: 0, DIVERGED: 1, COULD_NOT_REPLAY: 2}


@dataclass
class Plan:
    """What the replay runs, where, and what differs from the recording, before it runs."""

    of: int
    tree: Tree
    command: list[str]  # as shown: secrets given for it read <redacted>
    env_applied: dict[str, str]  # recorded environment variables set for the subprocess
    env_removed: list[str]  # variables of the recorded families that were not set then
    environment_differences: list[Difference]
    data_differences: list[dict]
    data_links: list[str]  # declared data missing from the tree, linked to where it is
    secrets: list[str]  # names given (never their values)
    store: str  # printable

    def to_dict(self) -> dict[str, Any]:
        return {"of": self.of, "tree": self.tree.to_dict(), "command": self.command, "env_applied": self.env_applied,
                "env_removed": self.env_removed,
                "environment_differences": [d.to_dict() for d in self.environment_differences],
                "data_differences": self.data_differences, "data_links": self.data_links,
                "secrets": self.secrets, "store": self.store}


@dataclass
class ReplayResult:
    """`verdict` is "reproduced", "diverged", "could not replay" or "dry run"; `exit_code`
    is what `recorder replay` exits with (0, 1, 2, 0)."""

    of: int
    verdict: str
    reason: str
    plan: Plan
    replay_id: int | None = None
    status: StatusComparison | None = None
    metrics: list[MetricComparison] = field(default_factory=list)
    config_same: bool | None = None
    environment_differences: list[Difference] = field(default_factory=list)
    data_differences: list[dict] = field(default_factory=list)
    kept: Path | None = None  # where the rebuilt tree was left, if it was

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def reproduced(self) -> bool:
        return self.verdict == REPRODUCED

    def stored(self) -> dict[str, Any]:
        """The `replay` field of the new run's document."""
        return {"verdict": self.verdict, "reason": self.reason, "of": self.of,
                "status": self.status.to_dict() if self.status else None,
                "config_same": self.config_same,
                "metrics": [m.to_dict() for m in self.metrics],
                "environment_differences": [d.to_dict() for d in self.environment_differences],
                "data_differences": self.data_differences, "tree": self.plan.tree.origin}

    def to_dict(self) -> dict[str, Any]:
        return {**self.stored(), "replay_id": self.replay_id, "exit_code": self.exit_code,
                "kept": str(self.kept) if self.kept else None, "plan": self.plan.to_dict()}
