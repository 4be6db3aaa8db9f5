"""List + watch one resource into a cache, in a thread of its own.

The loop is client-go's reflector, reduced: list (the cache becomes exactly the
list, and the list's ``resourceVersion`` is where the watch starts), then watch
from that version with bookmarks (which only move the version forward). A
watch that ends (server timeout, dropped connection) resumes from the last
version seen; ``410 Gone`` (the version was compacted away) re-lists, so no
update is lost however long the watch was down. Failures back off (bounded)
and are kept in ``error`` for ``/readyz`` and the log.

Every change calls ``on_change`` on the event loop (thread-safe); consumers
read ``snapshot()`` and debounce bursts themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from controlplane.kube.client import Kube, KubeError, Obj, Resource, WatchStream, status_error

log = logging.getLogger("sluice.kube")


def key_of(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Informer:
    def __init__(self, kube: Kube, resource: Resource, namespace: str | None = None,
                 label_selector: str | None = None, *,
                 on_change: Callable[[], None] | None = None,
                 watch_timeout_s: int = 300, backoff_s: tuple[float, float] = (0.2, 10.0)
                 ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.on_change = on_change
        self.watch_timeout_s = watch_timeout_s
        self.backoff_s = backoff_s
        self.synced = False  # the first list succeeded
        self.error: str | None = None  # the latest failure, until a call succeeds again
        self.error_status = 0
        self.lists = 0  # lists done (the first one and every re-list)
        self.resource_version = ""
        self._objects: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._stream: WatchStream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        selector = f" with labels {self.label_selector}" if self.label_selector else ""
        return f"{self.resource.describe(self.namespace)}{selector}"

    def snapshot(self) -> dict[str, Obj]:
        """``namespace/name`` → object, as of the latest event (a copy)."""
        with self._lock:
            return dict(self._objects)

    # -- lifecycle (event loop side)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"watch {self.describe()}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    async def join(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout)

    async def run(self, stop: asyncio.Event) -> None:
        self.start()
        try:
            await stop.wait()
        finally:
            self.stop()
            await self.join()

    # -- the reflector (its own thread)

    def _notify(self) -> None:
        loop, callback = self._loop, self.on_change
        if loop is not None and callback is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._halt.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._watch()
                delay = self.backoff_s[0]
            except KubeError as exc:
                if exc.status == 410:
                    log.info("%s: resource version %s is gone; re-listing", self.describe(),
                             self.resource_version)
                    self.resource_version = ""
                    continue
                if self._halt.is_set():
                    return
                self._failed(exc)
                self._halt.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])
            except Exception as exc:  # a malformed answer: start over from a list
                if self._halt.is_set():
                    return
                log.warning("%s: %s: %s; re-listing", self.describe(), type(exc).__name__, exc)
                self.resource_version = ""
                self._halt.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])

    def _failed(self, exc: KubeError) -> None:
        message = exc.describe()
        if message != self.error:
            log.error("cannot list/watch %s: %s", self.describe(), message)
        self.error, self.error_status = message, exc.status
        self._notify()

    def _list(self) -> None:
        body = self.kube.list(self.resource, self.namespace, self.label_selector)
        items = body.get("items") or []
        objects = {key_of(o): o for o in items if isinstance(o, dict)}
        with self._lock:
            self._objects = objects
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        self.lists += 1
        self.synced = True
        self.error, self.error_status = None, 0
        self._notify()

    def _watch(self) -> None:
        stream = self.kube.watch(self.resource, self.namespace, self.label_selector,
                                 self.resource_version, self.watch_timeout_s)
        self._stream = stream
        try:
            if self._halt.is_set():
                return
            for event in stream:
                if self._halt.is_set():
                    return
                self._event(event)
        finally:
            self._stream = None
            stream.close()

    def _event(self, event: Obj) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise status_error(obj)
        version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(key_of(obj), None)
            elif kind in ("ADDED", "MODIFIED"):
                self._objects[key_of(obj)] = obj
            else:
                return
        self.resource_version = version or self.resource_version
        self.error, self.error_status = None, 0
        self._notify()
