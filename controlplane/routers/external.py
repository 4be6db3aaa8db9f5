"""What the Gateway API and Istio routers share: a writer that follows the store.

``apply`` sets the override on the store, as the xDS router does, and wakes
the writer; the writer (leader only) gives every service routed by this kind
its effective weights, whenever they differ from what it last wrote, and
notes the store revision each write covered. So outcomes restored after a
restart, a release of the traffic to the file's weights, or a declared edit
reach the objects too, not only a running experiment's steps. Writes are PUTs
of what was just read (``resourceVersion``), retried on ``409 Conflict``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from controlplane.kube.client import Kube, KubeError
from controlplane.model import ModelService
from controlplane.rollout.sync import SyncReport
from controlplane.store import Store, TrafficOverride

log = logging.getLogger("sluice.routers")

Weights = tuple[tuple[str, float], ...]


class ExternalRouter:
    name = ""

    def __init__(self, kube: Kube, store: Store, namespace_of: Callable[[str], str]) -> None:
        self.kube = kube
        self.store = store
        self.namespace_of = namespace_of
        self.leading = False
        self.written: dict[str, Weights] = {}  # service -> weights written
        self.done: dict[str, int] = {}  # service -> store revision the objects reflect
        self.waiting: dict[str, str] = {}  # service -> why not yet in effect
        self.errors: dict[str, str] = {}  # service -> why the write failed
        self._wake = asyncio.Event()

    # -- the Router protocol

    def apply(self, service: str, override: TrafficOverride) -> int:
        self.store.set_override(service, override)
        self._wake.set()
        return self.store.revision

    def in_effect(self, service: str, versions: Iterable[str], token: int) -> SyncReport:
        target = self.describe(service)
        if service in self.errors:
            return SyncReport(True, (target,), (), ((target, self.errors[service]),))
        if self.done.get(service, -1) >= token and service not in self.waiting:
            return SyncReport(True, (target,), (), ())
        why = self.waiting.get(service, "not written yet")
        return SyncReport(True, (target,), (f"{target} ({why})",), ())

    # -- per kind

    def describe(self, service: str) -> str:
        raise NotImplementedError

    def write(self, service: ModelService, weights: dict[str, float]) -> str | None:
        """Writes the weights (blocking); returns why they are not in effect yet, or None."""
        raise NotImplementedError

    def check(self, service: ModelService) -> str | None:
        """Reads back whether a write took effect (blocking); None when it did."""
        return None

    # -- the writer

    def _mine(self) -> list[ModelService]:
        return [s for s in self.store.state.services
                if s.router is not None and s.router.kind == self.name]

    def sync_once(self, services: list[ModelService] | None = None,
                  revision: int | None = None) -> None:
        """One pass over this router's services (blocking: run it in a thread, with the
        services and revision taken on the event loop)."""
        revision = self.store.revision if revision is None else revision
        for service in self._mine() if services is None else services:
            weights = tuple((v.name, v.weight) for v in service.versions)
            try:
                if self.written.get(service.name) != weights or service.name in self.errors:
                    pending = self.write(service, dict(weights))
                    self.written[service.name] = weights
                    log.info("%s: %s weights %s", service.name, self.describe(service.name),
                             ", ".join(f"{v}={w:g}" for v, w in weights))
                elif service.name in self.waiting:
                    pending = self.check(service)
                else:
                    pending = None
            except KubeError as exc:
                self.errors[service.name] = exc.describe()
                log.warning("%s: cannot write %s: %s", service.name,
                            self.describe(service.name), exc.describe())
                continue
            self.errors.pop(service.name, None)
            if pending is None:
                self.waiting.pop(service.name, None)
            else:
                self.waiting[service.name] = pending
            self.done[service.name] = revision

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            self._wake.clear()
            mine = self._mine()
            if self.leading and mine:
                await asyncio.to_thread(self.sync_once, mine, self.store.revision)

    def forget(self) -> None:
        """Leadership lost: the next leader writes afresh."""
        self.written.clear()
        self.done.clear()
        self.waiting.clear()
        self.errors.clear()


def replace_with_retry(kube: Kube, read: Callable[[], dict[str, object] | None],
                       change: Callable[[dict[str, object]], dict[str, object]],
                       put: Callable[[dict[str, object]], dict[str, object]],
                       attempts: int = 3) -> dict[str, object]:
    """GET, change, PUT; again from a fresh GET on 409 Conflict (someone else wrote)."""
    for attempt in range(attempts):
        current = read()
        if current is None:
            raise KubeError(404, "NotFound", "not found")
        try:
            return put(change(current))
        except KubeError as exc:
            if exc.status != 409 or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
