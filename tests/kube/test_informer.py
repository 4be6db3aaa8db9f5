"""List + watch: resumes from its version, re-lists on 410 Gone, loses no update."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controlplane.kube.client import PODS, Kube
from controlplane.kube.informer import Informer
from tests.kube.apiserver import ApiServer
from tests.kube.conftest import pod


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def names(informer: Informer) -> set[str]:
    return {key.split("/")[1] for key in informer.snapshot()}


async def test_a_forced_410_relists_and_loses_no_update(apiserver: ApiServer) -> None:
    url = apiserver.port()
    kube = Kube.at(url, timeout=(1.0, 3.0))
    writer = Kube.at(apiserver.url)
    changes: list[int] = []
    informer = Informer(kube, PODS, "models", "app=chat", on_change=lambda: changes.append(1),
                        watch_timeout_s=30, backoff_s=(0.05, 0.2))
    informer.start()
    try:
        await until(lambda: informer.synced)
        writer.create(PODS, "models", pod("a"))
        writer.create(PODS, "models", pod("b"))
        await until(lambda: names(informer) == {"a", "b"})
        assert informer.lists == 1
        apiserver.block(url)  # the watch drops and cannot come back ...
        await until(lambda: informer.error is not None)
        writer.create(PODS, "models", pod("c"))
        writer.delete(PODS, "models", "a")
        b = writer.get(PODS, "models", "b")
        assert b is not None
        b["spec"]["nodeName"] = "gpu-1"
        writer.replace(PODS, "models", "b", b)
        apiserver.compact()  # ... and what it missed is no longer in the history
        apiserver.block(url, False)
        await until(lambda: names(informer) == {"b", "c"})
        assert informer.lists == 2  # resumed with a 410, so it listed again
        assert informer.snapshot()["models/b"]["spec"]["nodeName"] == "gpu-1"
        assert informer.error is None and changes
    finally:
        informer.stop()
        await informer.join()
        kube.close()
        writer.close()


async def test_a_dropped_watch_resumes_from_its_version(apiserver: ApiServer) -> None:
    kube = Kube.at(apiserver.url)
    informer = Informer(kube, PODS, "models", None, watch_timeout_s=30, backoff_s=(0.05, 0.2))
    informer.start()
    try:
        await until(lambda: informer.synced)
        kube.create(PODS, "models", pod("a"))
        await until(lambda: names(informer) == {"a"})
        apiserver.drop_watches()
        kube.create(PODS, "models", pod("b"))
        await until(lambda: names(informer) == {"a", "b"})
        assert informer.lists == 1  # the missed event came from the history, no re-list
        await until(lambda: int(informer.resource_version) >= apiserver.rv)  # bookmarks
    finally:
        informer.stop()
        await informer.join()
        kube.close()


async def test_forbidden_is_reported_and_retried(apiserver: ApiServer) -> None:
    apiserver.forbid("list", "pods")
    kube = Kube.at(apiserver.url)
    informer = Informer(kube, PODS, "models", None, backoff_s=(0.05, 0.1))
    informer.start()
    try:
        await until(lambda: informer.error is not None)
        assert informer.error_status == 403 and "forbidden by RBAC" in informer.error
        assert not informer.synced
        apiserver.forbid("list", "pods", False)
        await until(lambda: informer.synced and informer.error is None)
    finally:
        informer.stop()
        await informer.join()
        kube.close()
