"""What `recorder replay`, `sources`, `compare` and `env` print for people (their `--json`
is each result's `to_dict()`, through `render.emit`)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..render import value_text
from .compare import COULD_NOT_REPLAY, DIVERGED, REPRODUCED, MetricComparison
from .environment import Difference
from .result import DRY_RUN, Plan, ReplayResult
from .runs import RunComparison
from .tree import Tree

VERDICT_STYLE = {REPRODUCED: "bold green", DIVERGED: "bold red", COULD_NOT_REPLAY: "bold red",
                 DRY_RUN: "bold"}


def plan(out: Console, plan: Plan) -> None:
    """Before the replay runs: where its tree came from, what differs, what runs."""
    out.print(Text(f"replaying run {plan.of}: tree from {plan.tree.describe()}"))
    out.print(Text(f"  in {plan.tree.root}"))
    if plan.tree.mismatches:
        out.print(Text(f"  warning: the rebuilt tree differs from the recorded source of "
                       f"{', '.join(plan.tree.mismatches)}", style="yellow"))
    _differences(out, "environment", plan.environment_differences, "as recorded")
    data = [Difference(f"data {d['path']}", _sha(d["recorded"]), _sha(d["now"]))
            for d in plan.data_differences]
    if data:
        _differences(out, "data", data, "")
    if plan.env_applied or plan.env_removed:
        parts = ([f"set {' '.join(f'{k}={v}' for k, v in plan.env_applied.items())}"]
                 if plan.env_applied else [])
        parts += [f"removed {' '.join(plan.env_removed)} (not set when recorded)"
                  ] if plan.env_removed else []
        out.print(Text(f"environment variables: {'; '.join(parts)}"))
    for rel in plan.data_links:
        out.print(Text(f"  data {rel}: linked into the tree from the original location"))
    where = os.path.relpath(plan.tree.cwd, plan.tree.root)
    out.print(Text(f"running: {command_text(plan.command)}"
                   + (f"  (in {where})" if where != "." else "")))
    out.print()


def result(out: Console, result: ReplayResult) -> None:
    if result.verdict == DRY_RUN:
        out.print(Text("dry run: nothing was run"))
    else:
        out.print(Text(f"replay: run {result.replay_id} (replay of run {result.of})"))
        if result.status is not None:
            out.print(Text(f"  status      {result.status.summary()}"))
        if result.config_same is False:
            out.print(Text("  config      differs from the original's", style="red"))
        metrics_table(out, result.metrics)
        seen = {d.what for d in result.plan.environment_differences}
        after = [d for d in result.environment_differences if d.what not in seen]
        if after:
            _differences(out, "seen in the replay", after, "")
        out.print(Text.assemble((result.verdict.upper(), VERDICT_STYLE[result.verdict]),
                                f": {result.reason}"))
    if result.kept is not None:
        out.print(Text(f"the rebuilt tree is kept in {result.plan.tree.root}"))


def metrics_table(out: Console, metrics: list[MetricComparison]) -> None:
    if not metrics:
        out.print(Text("  metrics     none on either side"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 0, 0, 3))
    for column in ("metric", "points", "comparison"):
        table.add_column(column, justify="right" if column == "points" else "left")
    for m in metrics:
        points = str(m.points) if m.points == m.replay_points else f"{m.points} / {m.replay_points}"
        style = "" if m.identical else ("red" if m.judged else "yellow")
        table.add_row(Text(m.name), points, Text(m.summary(), style=style))
    out.print(Padding(table, (0, 0, 0, 2), expand=False))
    timings = [m.name for m in metrics if m.timing and not m.judged]
    if timings:
        out.print(Text(f"  {', '.join(timings)}: timing metrics, shown but left out of the "
                       "verdict (--compare-all judges them)"))


def tree(out: Console, tree: Tree) -> None:
    out.print(Text(f"rebuilt in {tree.root} from {tree.describe()}"))
    if tree.mismatches:
        out.print(Text(f"warning: the rebuilt tree differs from the recorded source of "
                       f"{', '.join(tree.mismatches)}", style="yellow"))


def comparison(out: Console, cmp: RunComparison) -> None:
    out.print(Text(f"run {cmp.a} vs run {cmp.b}", style="bold"))
    out.print(Text("config", style="bold"))
    if not cmp.config:
        out.print(Text("  the same"))
    for key, a, b in cmp.config:
        out.print(Text(f"  {key}: {value_text(a, 80)} vs {value_text(b, 80)}"))
    out.print(Text("code", style="bold"))
    if cmp.code_unavailable:
        out.print(Text(f"  not compared: {cmp.code_unavailable}"))
    elif not cmp.code:
        out.print(Text("  the same"))
    else:
        for line in cmp.code.splitlines():
            style = ("green" if line.startswith("+") else "red" if line.startswith("-")
                     else "cyan" if line.startswith("@@") else "")
            out.print(Text(line, style=style))
    _differences(out, "environment", cmp.environment, "the same", labels=("run " + str(cmp.a),
                                                                            "run " + str(cmp.b)))
    out.print(Text(f"status: {cmp.status.summary()}"))
    out.print(Text("metrics", style="bold"))
    metrics_table(out, cmp.metrics)


def requirements(out: Console, text: str) -> None:
    out.file.write(text)  # verbatim: a file pip reads


def command_text(command: list[str]) -> str:
    shown = ["python" if i == 0 and arg == sys.executable else arg for i, arg in enumerate(command)]
    return shlex.join(shown)


def _differences(out: Console, title: str, found: Iterable[Difference], none: str,
                 labels: tuple[str, str] = ("recorded", "here")) -> None:
    found = list(found)
    if not found:
        if none:
            out.print(Text(f"{title}: {none}"))
        return
    out.print(Text(f"{title}: {len(found)} difference{'s' if len(found) != 1 else ''}",
                   style="yellow"))
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 0, 0, 3))
    for column in ("", *labels):
        table.add_column(column)
    for d in found:
        table.add_row(Text(d.what), Text(d.recorded), Text(d.now))
    out.print(Padding(table, (0, 0, 0, 2), expand=False))


def _sha(value: str | None) -> str:
    return value[:12] if value else "missing"


def printer(draw):
    """`draw(console, data)` as a one-argument callback (the plan, printed before running)."""
    from ..render import console

    return lambda data: draw(console(), data)
