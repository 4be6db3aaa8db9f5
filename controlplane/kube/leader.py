"""Leader election on a ``coordination.k8s.io/v1`` Lease (client-go's algorithm).

A candidate takes the Lease when nobody holds it, or when the holder has not
renewed it for ``leaseDurationSeconds`` *as observed locally* (the time the
candidate last saw the record change, so clocks need not agree). Every write
carries the ``resourceVersion`` it read: of two candidates only one wins, the
other gets ``409 Conflict``. The leader renews every ``retry_period``; when it
has not managed to for ``renew_deadline`` (< the lease duration, so it stands
down before anyone else may take over) it stops leading. On shutdown it
releases the Lease so a follower takes over at once.

With the defaults (10 s lease, 7 s renew deadline, 2 s retry) a follower
leads at most 12 s after the leader died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from controlplane.kube.client import LEASES, Kube, KubeError, Obj

log = logging.getLogger("sluice.kube")
# Where the holder's admin API answers (followers forward experiment requests there).
ADMIN_ANNOTATION = "sluice.dev/admin-url"


def micro_time(t: datetime | None = None) -> str:
    """A Kubernetes MicroTime."""
    return (t or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    identity: str
    name: str = "sluice-leader"
    lease_duration_s: float = 10.0
    renew_deadline_s: float = 7.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("leader election needs 0 < retry period < renew deadline < "
                             "lease duration")


class LeaderElector:
    def __init__(self, kube: Kube, settings: LeaseSettings,
                 clock: Callable[[], float] = time.monotonic,
                 advertise: Callable[[], str | None] = lambda: None) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.advertise = advertise
        self.leading = False
        self.holder: str | None = None  # as last read
        self.holder_admin: str | None = None  # the holder's admin URL, as last read
        self.error: str | None = None
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0

    # -- one attempt (blocking: run it in a thread)

    def try_acquire_or_renew(self) -> bool:
        s = self.settings
        try:
            lease = self.kube.get(LEASES, s.namespace, s.name)
            if lease is None:
                self._create()
                return True
            if not self._may_take(lease):
                return False
            self._take(lease)
        except KubeError as exc:
            if exc.status != 409:  # a conflict is another candidate winning: routine
                if exc.describe() != self.error:
                    log.warning("leader election on Lease %s/%s: %s", s.namespace, s.name,
                                exc.describe())
                self.error = exc.describe()
            return False
        self.error = None
        return True

    def _spec(self, acquire: str, transitions: int) -> Obj:
        return {"holderIdentity": self.settings.identity,
                "leaseDurationSeconds": math.ceil(self.settings.lease_duration_s),
                "acquireTime": acquire, "renewTime": micro_time(),
                "leaseTransitions": transitions}

    def _create(self) -> None:
        s = self.settings
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": self._spec(micro_time(), 0)}
        self._advertise(body)
        self._observe(self.kube.create(LEASES, s.namespace, body))

    def _advertise(self, lease: Obj) -> None:
        url = self.advertise()
        annotations = dict((lease.setdefault("metadata", {})).get("annotations") or {})
        if url:
            annotations[ADMIN_ANNOTATION] = url
        else:
            annotations.pop(ADMIN_ANNOTATION, None)
        lease["metadata"]["annotations"] = annotations

    def _observe(self, lease: Obj) -> None:
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        spec = lease.get("spec") or {}
        self.holder_admin = annotations.get(ADMIN_ANNOTATION) if spec.get(
            "holderIdentity") else None
        record = (spec.get("holderIdentity"), spec.get("renewTime"),
                  spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        self.holder = spec.get("holderIdentity") or None
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()

    def _may_take(self, lease: Obj) -> bool:
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration_s)
        if not holder or holder == self.settings.identity:
            return True
        return self._observed_at + duration <= self.clock()

    def _take(self, lease: Obj) -> None:
        spec = lease.get("spec") or {}
        mine = spec.get("holderIdentity") == self.settings.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquire = spec.get("acquireTime") if mine else None
        lease["spec"] = self._spec(acquire or micro_time(), transitions)
        self._advertise(lease)
        self._observe(self.kube.replace(LEASES, self.settings.namespace,
                                        self.settings.name, lease))

    def release(self) -> None:
        """Gives the Lease up (on shutdown) so another replica leads at once."""
        s = self.settings
        with contextlib.suppress(KubeError):
            lease = self.kube.get(LEASES, s.namespace, s.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != s.identity:
                return
            now = micro_time()
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                             "renewTime": now, "acquireTime": now}
            self.kube.replace(LEASES, s.namespace, s.name, lease)

    # -- the loop

    async def run(self, stop: asyncio.Event, on_start: Callable[[], Awaitable[None]],
                  on_stop: Callable[[], Awaitable[None]]) -> None:
        s = self.settings
        last_renew = -math.inf
        try:
            while not stop.is_set():
                ok = await asyncio.to_thread(self.try_acquire_or_renew)
                now = self.clock()
                if ok:
                    last_renew = now
                    if not self.leading:
                        self.leading = True
                        log.info("%s leads (Lease %s/%s)", s.identity, s.namespace, s.name)
                        await on_start()
                elif self.leading and now - last_renew >= s.renew_deadline_s:
                    self.leading = False
                    log.warning("%s lost the lead: no renewal for %.1fs", s.identity,
                                now - last_renew)
                    await on_stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), s.retry_period_s)
        finally:
            if self.leading:
                self.leading = False
                await on_stop()
                await asyncio.to_thread(self.release)
