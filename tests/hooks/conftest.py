"""`recorded(fn)`: run `fn` inside a real run on a fresh in-memory store, then read back what
was stored, as a user would (events, metrics, histograms)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

import recorder
from recorder.store import open_store


@dataclass
class Recorded:
    value: Any
    url: str
    run: dict
    events: list[dict]
    metrics: dict[str, dict]
    histograms: list[dict]

    def kind(self, kind: str) -> list[dict]:
        return sorted((e for e in self.events if e.get("kind") == kind),
                      key=lambda e: (e.get("step", 0), e.get("module", "")))

    def series(self, name: str) -> tuple[list, list]:
        s = self.metrics[name]
        return s["steps"], s["values"]


def read_back(url: str, value: Any = None) -> Recorded:
    store = open_store(url)
    run = store.get_run("last")
    events = list(store.db["events"].find({"run_id": run["_id"]}))
    histograms = list(store.db["histograms"].find({"run_id": run["_id"]}))
    return Recorded(value, url, run, events, store.metrics(run["_id"]), histograms)


@pytest.fixture
def recorded():
    def record(fn, **kwargs) -> Recorded:
        url = f"mongomock://{uuid.uuid4().hex}"
        out = {}

        @recorder.experiment(name="hooks", store=url)
        def main():
            out["value"] = fn(**kwargs)

        main()
        return read_back(url, out.get("value"))

    return record


@pytest.fixture
def mem_store():
    return f"mongomock://{uuid.uuid4().hex}"
