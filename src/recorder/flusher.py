"""The one background thread between a run and its store.

It opens the store (imports and network happen here, not before `main`), then
about every second asks the run for write operations and applies them in order.
A write that fails sends everything not yet delivered to the run's spool on disk,
and the spool is retried every `retry_interval` seconds while the run goes on:
training never waits on, or dies because of, the database.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from .redact import mask_url_passwords
from .store.backends import Backend
from .store.mounts import warn_if_network
from .store.spool import Spool, deliver
from .store.storable import network_error, repaired
from .store.store import Store

FLUSH_INTERVAL = 1.0
RETRY_INTERVAL = 5.0


class Flusher:
    def __init__(self, backend: Backend, uid: str, collect: Callable[[bool], list[dict]],
                 interval: float = FLUSH_INTERVAL, retry_interval: float = RETRY_INTERVAL):
        self.backend = backend
        self.spool = Spool(backend.spool_dir, uid)
        self.store: Store | None = None
        self.run_id: int | None = None
        self.opened = threading.Event()  # the first delivery was tried: run_id is known or not
        self._collect = collect
        self._interval = interval
        self._retry_interval = retry_interval
        self._pending: deque[dict] = deque()
        self._lock = threading.Lock()  # guards _pending and the spool file
        self._collecting = threading.Lock()  # one collect at a time, enqueued in order
        self._stop = threading.Event()
        self._abandoned = False
        self.lost = 0  # writes neither delivered nor spooled
        self._offline_since: float | None = None
        self._next_retry = 0.0
        self._repairs_told = False
        self._thread = threading.Thread(target=self._run, name="recorder-flusher", daemon=True)

    def start(self, first_ops: list[dict]) -> None:
        self._pending.extend(first_ops)
        self._thread.start()

    def close(self, timeout: float) -> bool:
        """Deliver everything, waiting at most `timeout` s; what is left goes to the spool.
        Returns True when every write reached the store."""
        with self._collecting:
            self._take(self._collect(True))
            self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            if self._thread.is_alive():  # stuck on the network: a spool of its own takes over
                self._abandoned = True
                at_exit = Spool(self.backend.spool_dir, self.spool.uid, "exit")
                self._keep(at_exit, list(self._pending))
                self._pending.clear()
                self._warn(f"could not finish writing to {self.backend.url} within {timeout:.0f} s: "
                           f"the rest is kept in {at_exit.path}; `recorder sync` delivers it")
            return self._offline_since is None and not self._abandoned and not self.spool.exists()

    def _run(self) -> None:
        self._open()
        self._deliver()
        self.opened.set()
        self._mark_dead_runs()
        while not self._stop.wait(self._interval):
            with self._collecting:
                if not self._stop.is_set():
                    self._take(self._collect(False))
            self._deliver()
        self._deliver()

    def _mark_dead_runs(self) -> None:
        """A run start writes DIED on the store's stale RUNNING runs (see Store.mark_dead)."""
        if self.store is not None and self._offline_since is None:
            with contextlib.suppress(Exception):  # housekeeping: never the run's problem
                self.store.mark_dead()

    def _open(self) -> bool:
        try:
            self.store = Store(self.backend.connect(), self.backend.write_lock, self.backend.url)
        except Exception as exc:  # noqa: BLE001 - a missing driver, DNS down: keep it on disk
            self._go_offline(exc)
            return False
        if self.backend.kind == "embedded":
            warn_if_network(self.backend.url)  # NFS, Lustre...: its locks are not safe there
        return True

    def _keep(self, spool: Spool, ops: list[dict]) -> None:
        """To the spool; when even that fails (a full disk, a read-only folder) the writes
        are lost, and the user is told how many and why: the run itself goes on."""
        try:
            spool.append(ops)
        except OSError as exc:
            self.lost += len(ops)
            self._warn(f"cannot keep {len(ops)} writes in {spool.path} ({exc}): they are lost "
                       f"({self.lost} so far); the run goes on")

    def _take(self, ops: list[dict]) -> None:
        with self._lock:
            self._pending.extend(ops)

    def _deliver(self) -> None:
        if self._offline_since is not None and not self._reconnect():
            with self._lock:
                if not self._abandoned:
                    self._keep(self.spool, list(self._pending))
                self._pending.clear()
            return
        while self._pending:
            op = self._pending[0]
            try:
                result = self.store.apply(op)
            except Exception as exc:  # noqa: BLE001 - whatever the database says, training goes on
                if not network_error(exc) and self._repair(op):
                    continue  # its storable copy is tried at once
                self._go_offline(exc)
                with self._lock:
                    if not self._abandoned:
                        self._keep(self.spool, list(self._pending))
                    self._pending.clear()
                return
            if op["op"] == "insert_run":
                self.run_id = result
                self.opened.set()
            with self._lock:
                if self._pending and self._pending[0] is op:
                    self._pending.popleft()

    def _repair(self, op: dict) -> bool:
        """After a failed write: when the operation itself holds a value no database takes
        (see store/storable.py), its storable copy takes its place and the user is told once.
        False when there was nothing to repair: the store is what failed."""
        fixed = repaired(op)
        if fixed is None:
            return False
        copy, changes = fixed
        with self._lock:
            if self._pending and self._pending[0] is op:
                self._pending[0] = copy
        if not self._repairs_told:
            self._repairs_told = True
            more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
            self._warn(f"run {self.spool.uid}: some values cannot be stored as they are and "
                       f"were converted: {'; '.join(changes[:3])}{more}")
        return True

    def _reconnect(self) -> bool:
        """Deliver the spool when the retry time has come; True once it is all delivered."""
        now = time.monotonic()
        if now < self._next_retry and not self._stop.is_set():
            return False
        self._next_retry = now + self._retry_interval
        if self.store is None and not self._open():
            return False
        try:
            delivery = deliver(self.spool, self.store)
        except Exception:  # noqa: BLE001 - still unreachable: try again later
            return False
        self.run_id = delivery.run_id
        self._offline_since = None
        self._warn(f"{self.backend.url} is reachable again: the spooled writes were delivered")
        return True

    def _go_offline(self, exc: Exception) -> None:
        self.opened.set()  # no id for now: don't keep `Run.id` waiting
        if self._offline_since is None:
            self._offline_since = time.monotonic()
            self._next_retry = self._offline_since + self._retry_interval
            reason = mask_url_passwords(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._warn(f"cannot write to {self.backend.url} ({reason[:200]}); "
                       f"the run goes on and its writes are kept in {self.spool.path}")

    @staticmethod
    def _warn(message: str) -> None:
        print(f"recorder: warning: {message}", file=sys.__stderr__, flush=True)
