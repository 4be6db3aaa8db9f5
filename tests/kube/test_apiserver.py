"""The API server double behaves like kube-apiserver where Sluice depends on it.

Driven with the real ``kubernetes`` client: raw calls through ``Kube`` and, for
good measure, the client's own typed API and ``Watch``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from controlplane.kube.client import EXPERIMENTS, PODS, Kube, KubeError
from tests.kube.apiserver import ApiServer
from tests.kube.conftest import pod
from tests.kube.selectors import matches


def experiment(name: str) -> dict[str, Any]:
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": name, "namespace": "models"},
            "spec": {"service": "chat"}, "status": {"phase": "Ignored"}}


def events(kube: Kube, since: str, **query: str) -> list[dict[str, Any]]:
    stream = kube.watch(PODS, "models", query.get("selector"), since, 1)
    try:
        return list(stream)
    finally:
        stream.close()


def test_create_sets_server_fields_and_refuses_duplicates(kube: Kube) -> None:
    a = kube.create(PODS, "models", pod("a"))
    b = kube.create(PODS, "models", pod("b"))
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert a["metadata"]["creationTimestamp"].endswith("Z")
    with pytest.raises(KubeError) as err:
        kube.create(PODS, "models", pod("a"))
    assert (err.value.status, err.value.reason) == (409, "AlreadyExists")


def test_put_needs_the_current_version(kube: Kube) -> None:
    created = kube.create(EXPERIMENTS, "models", experiment("e"))
    assert "status" not in created  # status is written through /status only
    changed = {**created, "spec": {"service": "other"}}
    updated = kube.replace(EXPERIMENTS, "models", "e", changed)
    assert updated["metadata"]["generation"] == 2
    with pytest.raises(KubeError) as stale:
        kube.replace(EXPERIMENTS, "models", "e", changed)  # the old resourceVersion
    assert (stale.value.status, stale.value.reason) == (409, "Conflict")
    unversioned = {**updated, "metadata": {"name": "e"}}
    with pytest.raises(KubeError) as missing:
        kube.replace(EXPERIMENTS, "models", "e", unversioned)
    assert missing.value.status == 422


def test_status_is_a_separate_subresource(kube: Kube) -> None:
    created = kube.create(EXPERIMENTS, "models", experiment("e"))
    with_status = kube.replace(EXPERIMENTS, "models", "e",
                               {**created, "spec": {"service": "ignored"},
                                "status": {"phase": "Progressing"}}, "status")
    assert with_status["status"] == {"phase": "Progressing"}
    assert with_status["spec"] == {"service": "chat"}  # spec untouched through /status
    assert with_status["metadata"]["generation"] == 1
    main = kube.replace(EXPERIMENTS, "models", "e",
                        {**with_status, "spec": {"service": "new"}, "status": {"phase": "X"}})
    assert main["status"] == {"phase": "Progressing"}  # status untouched through the object
    assert main["spec"] == {"service": "new"} and main["metadata"]["generation"] == 2
    patched = kube.patch(EXPERIMENTS, "models", "e", {"status": {"step": 2}}, "status")
    assert patched["status"] == {"phase": "Progressing", "step": 2}


def test_list_filters_by_namespace_and_labels(kube: Kube) -> None:
    kube.create(PODS, "models", pod("a", labels={"app": "chat", "version": "v1"}))
    kube.create(PODS, "models", pod("b", labels={"app": "chat", "version": "v2"}))
    kube.create(PODS, "models", pod("c", labels={"app": "embed"}))
    kube.create(PODS, "other", pod("d", ns="other", labels={"app": "chat"}))

    def names(selector: str | None, ns: str | None = "models") -> list[str]:
        return [o["metadata"]["name"] for o in kube.list(PODS, ns, selector)["items"]]

    assert names("app=chat") == ["a", "b"]
    assert names("app=chat,version!=v1") == ["b"]
    assert names("version in (v1,v2)") == ["a", "b"]
    assert names("app,!version") == ["c"]
    assert names("app notin (chat)") == ["c"]
    assert sorted(names("app=chat", None)) == ["a", "b", "d"]
    assert matches("a==b", {"a": "b"}) and not matches("a=b", {})


def test_watch_from_a_version_replays_what_was_missed(kube: Kube) -> None:
    listed = kube.list(PODS, "models")
    since = listed["metadata"]["resourceVersion"]
    kube.create(PODS, "models", pod("a"))
    kube.create(PODS, "models", pod("b", labels={"app": "other"}))
    kube.delete(PODS, "models", "a")
    seen = [(e["type"], e["object"]["metadata"].get("name")) for e in events(kube, since)
            if e["type"] != "BOOKMARK"]
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    only = [e["object"]["metadata"]["name"] for e in events(kube, since, selector="app=other")
            if e["type"] == "ADDED"]
    assert only == ["b"]


def test_bookmarks_carry_the_latest_version(kube: Kube) -> None:
    created = kube.create(PODS, "models", pod("a"))
    got = events(kube, created["metadata"]["resourceVersion"])  # a quiet 1 s watch
    marks = [e for e in got if e["type"] == "BOOKMARK"]
    assert marks and marks[-1]["object"]["metadata"]["resourceVersion"] == \
        created["metadata"]["resourceVersion"]


def test_a_compacted_version_is_gone(apiserver: ApiServer, kube: Kube) -> None:
    old = kube.create(PODS, "models", pod("a"))["metadata"]["resourceVersion"]
    kube.create(PODS, "models", pod("b"))
    apiserver.compact()
    [error] = events(kube, old)
    assert error["type"] == "ERROR" and error["object"]["code"] == 410


def test_forbidden_and_cut_off(apiserver: ApiServer, kube: Kube) -> None:
    apiserver.forbid("list", "pods")
    with pytest.raises(KubeError) as err:
        kube.list(PODS, "models")
    assert err.value.status == 403 and "cannot list" in err.value.describe()
    apiserver.forbid("list", "pods", False)
    other = apiserver.port()
    cut = Kube.at(other, timeout=(1.0, 2.0))
    assert cut.list(PODS, "models")["items"] == []
    apiserver.block(other)
    with pytest.raises(KubeError) as gone:
        cut.list(PODS, "models")
    assert gone.value.status == 0
    apiserver.block(other, False)
    assert cut.list(PODS, "models")["items"] == []
    cut.close()


def test_the_clients_typed_api_and_watch(apiserver: ApiServer, kube: Kube) -> None:
    apiserver.put(pod("a", ip="10.0.0.7"))  # as the kubelet: status included
    api = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=apiserver.url)))
    listed = api.list_namespaced_pod("models", label_selector="app=chat")
    assert [p.status.pod_ip for p in listed.items] == ["10.0.0.7"]
    seen = [e["object"].metadata.name for e in k8s_watch.Watch().stream(
        api.list_namespaced_pod, "models", resource_version="1", timeout_seconds=1)
        if e["type"] == "ADDED"]
    assert seen == ["a"]
    body = json.loads(api.read_namespaced_pod("a", "models", _preload_content=False).data)
    assert body["metadata"]["uid"]
