"""``ModelService`` and ``Experiment`` custom resources, watched like files.

Each resource's spec is rendered as one document named
``k8s:NAMESPACE/KIND/NAME`` and goes through the same loader and assembly as
a file: every error says where and what, and a resource with an error freezes
only what it defines, at its last good version (``status.document`` says so).
A resource that is deleted is gone like a file's document that is removed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable

import yaml

from controlplane.config import LoadResult, load_documents
from controlplane.kube.bursts import debounced
from controlplane.kube.client import EXPERIMENTS, MODEL_SERVICES, Kube, Obj
from controlplane.kube.informer import Informer
from controlplane.sources import OnResult

log = logging.getLogger("sluice.kube")

PREFIX = "k8s:"


def file_name(namespace: str, kind: str, name: str) -> str:
    return f"{PREFIX}{namespace}/{kind}/{name}"


def parse_file_name(file: str) -> tuple[str, str, str] | None:
    """``(namespace, kind, name)`` of a resource's document name, else None (a file)."""
    if not file.startswith(PREFIX):
        return None
    parts = file[len(PREFIX):].split("/")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def render(obj: Obj) -> tuple[str, str]:
    """The document a resource stands for, and its name."""
    meta = obj.get("metadata") or {}
    document = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                "metadata": {"name": meta.get("name")}, "spec": obj.get("spec")}
    name = file_name(str(meta.get("namespace", "")), str(obj.get("kind")),
                     str(meta.get("name")))
    return name, yaml.safe_dump(document, sort_keys=False)


class ResourceSource:
    """A ``ConfigSource`` over the custom resources (one namespace, or all)."""

    def __init__(self, kube: Kube, namespace: str | None = None, *, name: str = "kubernetes",
                 informer: Callable[..., Informer] = Informer) -> None:
        self.name = name
        self.kube = kube
        self.changed_at: float | None = None
        self._changed = asyncio.Event()
        self.informers = [informer(kube, resource, namespace, None,
                                   on_change=self._changed.set)
                          for resource in (MODEL_SERVICES, EXPERIMENTS)]
        self.loads = 0
        self._tasks: set[asyncio.Future[None]] = set()
        # Told the reason while the resources cannot be listed (None once they can).
        self.on_problem: Callable[[str | None], None] | None = None

    @property
    def synced(self) -> bool:
        return all(i.synced for i in self.informers)

    @property
    def error(self) -> str | None:
        return next((f"cannot watch {i.describe()}: {i.error}" for i in self.informers
                     if i.error), None)

    def load(self) -> LoadResult:
        objects = [o for i in self.informers for o in i.snapshot().values()]
        texts = sorted(render(o) for o in objects)
        return load_documents(texts)

    async def run(self, on_result: OnResult, stop: asyncio.Event) -> None:
        for informer in self.informers:
            informer.start()

        def flush() -> None:
            if self.on_problem is not None:
                self.on_problem(self.error or (None if self.synced else
                                               "waiting for the first list of custom resources"))
            if not self.synced:  # never a partial first load: it would remove everything
                return
            self.changed_at = time.monotonic()
            self.loads += 1
            outcome = on_result(self.load())
            if inspect.isawaitable(outcome):
                self._tasks.add(task := asyncio.ensure_future(outcome))
                task.add_done_callback(self._tasks.discard)

        try:
            await debounced(self._changed, stop, flush)
        finally:
            for informer in self.informers:
                informer.stop()
            for informer in self.informers:
                await informer.join()
