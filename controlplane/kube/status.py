"""The leader writes the ``status`` of every ModelService and Experiment resource.

What ``kubectl get experiments`` and ``kubectl get modelservices`` show: the
phase, the step and its weight, the effective weights and who set them, the
last decision with its reason, how Sluice took the document (ok, frozen at
its last good version, rejected, held) and Kubernetes-style conditions. Built
from the manager's views and the store (pure: ``experiment_status``,
``service_status``); written through the ``status`` subresource with the
``resourceVersion`` just seen, only when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controlplane.config import ObjectStatus
from controlplane.kube.client import EXPERIMENTS, MODEL_SERVICES, Kube, KubeError, Obj, Resource
from controlplane.kube.informer import Informer
from controlplane.kube.resources import file_name
from controlplane.model import ModelService
from controlplane.rollout.manager import RolloutManager
from controlplane.store import Store

log = logging.getLogger("sluice.kube")

TERMINAL = {"Succeeded", "RolledBack", "Failed"}


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 2)


def summary(weights: Mapping[str, float]) -> str:
    return " ".join(f"{v}={_num(w)}" for v, w in weights.items())


def _time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, ok: bool | None, reason: str, message: str = "") -> Obj:
    value = "Unknown" if ok is None else "True" if ok else "False"
    return {"type": kind, "status": value, "reason": reason, "message": message[:1000]}


def _document(status: ObjectStatus | None, own_file: str) -> tuple[Obj, Obj]:
    if status is None:
        return {"state": "rejected", "errors": [], "reason": "not loaded"}, condition(
            "ConfigValid", False, "NotLoaded", "not loaded")
    if status.file != own_file:  # another resource or file defines this name first
        message = f"the name is taken by {status.file}:{status.line}"
        return {"state": "rejected", "errors": [message], "reason": message}, condition(
            "ConfigValid", False, "Duplicate", message)
    errors = [str(e) for e in status.errors][:20]
    document = {"state": status.state.value, "errors": errors, "reason": status.reason}
    ok = status.state.value == "ok"
    reason = "Valid" if ok else status.state.value.capitalize()
    return document, condition("ConfigValid", ok, reason, "; ".join(errors) or status.reason)


def experiment_status(view: Mapping[str, Any] | None, decisions: Sequence[Mapping[str, Any]],
                      document: ObjectStatus | None, own_file: str,
                      generation: int | None) -> Obj:
    doc, valid = _document(document, own_file)
    out: Obj = {"observedGeneration": generation, "document": doc}
    conditions = [valid]
    if view is not None:
        steps = view.get("steps") or []
        step = int(view.get("step", 0)) + 1
        phase = str(view.get("phase"))
        weights = view.get("weights") or {}
        out.update(phase=phase, run=view.get("run"), step=step, steps=len(steps),
                   stepSummary=f"{min(step, max(len(steps), 1))}/{len(steps)} "
                   f"({_num(float(view.get('stepWeight', 0)))}%)",
                   weights=weights, weightsSummary=summary(weights),
                   waitingFor=view.get("waitingFor") or "")
        conditions.append(condition("Progressing", phase not in TERMINAL, phase,
                                    str(view.get("reason", ""))))
        conditions.append(condition("Complete", phase in TERMINAL, phase,
                                    str(view.get("reason", ""))))
    if decisions:
        last = decisions[-1]
        out["lastDecision"] = {"event": last.get("event"), "to": last.get("to"),
                               "step": int(last.get("step", 0)) + 1,
                               "reason": str(last.get("reason", ""))[:1000],
                               "time": _time(last.get("t"))}
    out["conditions"] = conditions
    return {k: v for k, v in out.items() if v is not None}


def service_status(store: Store, name: str, document: ObjectStatus | None, own_file: str,
                   generation: int | None, discovery: Mapping[str, Any]) -> Obj:
    doc, valid = _document(document, own_file)
    out: Obj = {"observedGeneration": generation, "document": doc}
    conditions = [valid]
    if valid["status"] == "True" or doc["state"] == "frozen":
        service: ModelService | None = None
        declared: ModelService | None = None
        with contextlib.suppress(KeyError):
            service, declared = store.state.service(name), store.declared.service(name)
        if service is not None and declared is not None:
            override = store.override(name)
            weights = {v.name: v.weight for v in service.versions}
            out.update(weights=weights, weightsSummary=summary(weights),
                       declaredWeights={v.name: v.weight for v in declared.versions},
                       weightsSetBy=override.owner if override else "config",
                       router=service.router.kind if service.router else "xds",
                       endpoints={v.name: len(v.endpoints) for v in service.versions})
            if discovery:
                out["discovery"] = dict(discovery)
            empty = [v.name for v in service.versions if v.weight > 0 and not v.endpoints]
            conditions.append(condition(
                "Ready", not empty, "NoEndpoints" if empty else "Serving",
                f"no endpoints for {', '.join(empty)}" if empty else ""))
    out["conditions"] = conditions
    return {k: v for k, v in out.items() if v is not None}


def _stamped(new: list[Obj], old: list[Obj], now: str) -> list[Obj]:
    """Conditions keep their lastTransitionTime while their status holds."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = before.get(c["type"])
        same = prev is not None and prev.get("status") == c["status"]
        out.append({**c, "lastTransitionTime": prev.get("lastTransitionTime", now)
                    if same and prev is not None else now})
    return out


class StatusWriter:
    def __init__(self, kube: Kube, store: Store, rollouts: Callable[[], RolloutManager],
                 informers: Mapping[str, Informer],
                 discovery: Callable[[str], Mapping[str, Any]], interval_s: float = 1.0) -> None:
        self.kube = kube
        self.store = store
        self.rollouts = rollouts
        self.informers = informers  # kind -> the resources' informer
        self.discovery = discovery
        self.interval_s = interval_s
        self.leading = False
        self.writes = 0
        self._written: dict[tuple[str, str, str], Obj] = {}

    def desired(self) -> list[tuple[Resource, Obj, Obj]]:
        out = []
        manager = self.rollouts()
        for kind, resource in (("ModelService", MODEL_SERVICES), ("Experiment", EXPERIMENTS)):
            informer = self.informers.get(kind)
            for obj in (informer.snapshot().values() if informer is not None else ()):
                meta = obj.get("metadata") or {}
                name, ns = str(meta.get("name")), str(meta.get("namespace", ""))
                own = file_name(ns, kind, name)
                document = self.store.status_of(kind, name)
                mine = document is not None and document.file == own
                if kind == "Experiment":
                    status = experiment_status(
                        manager.view(name) if mine else None,
                        manager.decisions(name) if mine else [], document, own,
                        meta.get("generation"))
                else:
                    status = service_status(self.store, name, document, own,
                                            meta.get("generation"),
                                            self.discovery(name) if mine else {})
                out.append((resource, obj, status))
        return out

    def write_once(self, desired: list[tuple[Resource, Obj, Obj]] | None = None) -> None:
        """Writes every status that changed (blocking: run it in a thread, with ``desired``
        taken on the event loop)."""
        now = _time(datetime.now(UTC).timestamp()) or ""
        for resource, obj, status in desired if desired is not None else self.desired():
            meta = obj["metadata"]
            key = (resource.kind, meta.get("namespace", ""), meta["name"])
            old = obj.get("status") or {}
            status["conditions"] = _stamped(status.get("conditions", []),
                                            old.get("conditions", []), now)
            if self._written.get(key) == status or old == status:
                self._written[key] = status
                continue
            try:
                self._put(resource, obj, status)
            except KubeError as exc:
                log.warning("cannot write the status of %s %s/%s: %s", resource.kind,
                            key[1], key[2], exc.describe())
                continue
            self._written[key] = status
            self.writes += 1

    def _put(self, resource: Resource, obj: Obj, status: Obj) -> None:
        meta = obj["metadata"]
        body = {**obj, "status": status}
        try:
            self.kube.replace(resource, meta.get("namespace"), meta["name"], body, "status")
        except KubeError as exc:
            if exc.status != 409:
                raise
            fresh = self.kube.get(resource, meta.get("namespace"), meta["name"])
            if fresh is not None:
                self.kube.replace(resource, meta.get("namespace"), meta["name"],
                                  {**fresh, "status": status}, "status")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.leading:
                await asyncio.to_thread(self.write_once, self.desired())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def forget(self) -> None:
        self._written.clear()
