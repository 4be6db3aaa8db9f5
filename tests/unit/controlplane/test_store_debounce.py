"""The store keeps the last good configuration; the debouncer bounds delay."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controlplane.config import load_text
from controlplane.debounce import Debounce
from controlplane.store import Store

GOOD = """
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata: {name: chat}
spec:
  listener: {address: 127.0.0.1, port: 10000}
  versions:
    - {name: v1, weight: 90, endpoints: [{address: 127.0.0.1, port: 18081}]}
    - {name: v2, weight: 10, endpoints: [{address: 127.0.0.1, port: 18082}]}
"""


def test_invalid_load_keeps_the_last_good_state_and_reports_errors() -> None:
    store = Store(("file",))
    assert not store.ready
    good = load_text(GOOD, "chat.yaml")
    assert store.apply_load("file", good)
    assert store.ready and store.revision == 1
    serving = store.state
    bad = load_text(GOOD.replace("weight: 10", "weight: 20"), "chat.yaml")
    assert bad.errors
    assert not store.apply_load("file", bad)
    assert store.state is serving and store.revision == 1
    [status] = store.sources()
    assert status.errors == bad.errors and status.rejected_loads == 1
    assert "weight" in str(status.errors[0])
    [doc] = store.statuses()
    assert (doc.name, doc.state.value) == ("chat", "frozen")


def test_reloading_identical_config_is_not_a_change() -> None:
    store = Store(("file",))
    good = load_text(GOOD, "chat.yaml")
    store.apply_load("file", good)
    store.changed.clear()
    assert not store.apply_load("file", load_text(GOOD, "chat.yaml"))
    assert not store.changed.is_set() and store.revision == 1


def test_weights_override_the_configured_split() -> None:
    store = Store(("file",))
    store.apply_load("file", load_text(GOOD, "chat.yaml"))
    assert store.set_weights("chat", {"v1": 50, "v2": 50})
    assert [v.weight for v in store.state.service("chat").versions] == [50, 50]
    assert [v.weight for v in store.declared.service("chat").versions] == [90, 10]
    assert not store.set_weights("chat", {"v1": 50, "v2": 50})
    # a declared edit changes the declared split; the override keeps serving
    edited = GOOD.replace("weight: 90", "weight: 80").replace("weight: 10", "weight: 20")
    assert not store.apply_load("file", load_text(edited, "chat.yaml"))
    assert [v.weight for v in store.declared.service("chat").versions] == [80, 20]
    assert [v.weight for v in store.state.service("chat").versions] == [50, 50]
    assert store.set_override("chat", None)
    assert [v.weight for v in store.state.service("chat").versions] == [80, 20]


def test_debounce_waits_for_quiet_but_not_past_the_ceiling() -> None:
    d = Debounce(quiet_s=0.1, ceiling_s=1.0)
    assert d.deadline() is None and not d.due(5.0)
    d = d.changed(10.0)
    assert not d.due(10.05) and d.due(10.1)
    for t in (10.05, 10.1, 10.15):  # a burst pushes the deadline out ...
        d = d.changed(t)
    assert d.deadline() == 10.15 + 0.1


@given(st.lists(st.floats(0, 0.09), min_size=1, max_size=200))
def test_property_a_steady_trickle_is_flushed_by_the_ceiling(gaps: list[float]) -> None:
    d = Debounce(quiet_s=0.1, ceiling_s=1.0)
    now = 0.0
    d = d.changed(now)
    for gap in gaps:
        now += gap
        d = d.changed(now)
        deadline = d.deadline()
        assert deadline is not None and deadline <= 1.0 + 1e-9
    assert d.flushed().deadline() is None
