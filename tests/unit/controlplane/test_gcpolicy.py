"""The full-collection schedule: after the interval, when quiet, never later than the cap."""

from __future__ import annotations

import asyncio
import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane import gcpolicy
from controlplane.gcpolicy import FullCollections, collect_on_schedule

# Whole milliseconds, so the differences the test takes are exact.
seconds = st.integers(0, 2_000_000).map(lambda ms: ms / 1000)


@given(st.integers(1, 600), st.integers(0, 10), st.integers(0, 600), seconds, seconds, seconds)
def test_due_only_after_the_interval_and_when_quiet_or_overdue(
    interval: int, quiet: int, max_delay: int, last_full: float, since_full: float,
    since_activity: float,
) -> None:
    schedule = FullCollections(interval, quiet, max_delay)
    now = last_full + since_full
    last_activity = now - since_activity
    # What the schedule sees (the sums above round).
    since_full, since_activity = now - last_full, now - last_activity
    due = schedule.due(now, last_full, last_activity)
    if since_full < interval:
        assert not due
    elif since_full >= interval + max_delay:
        assert due  # a server never quiet still collects
    else:
        assert due == (since_activity >= quiet)


def test_bad_schedules_are_refused() -> None:
    for bad in ({"interval_s": 0}, {"quiet_s": -1}, {"max_delay_s": -0.5}):
        with pytest.raises(ValueError, match="out of range"):
            FullCollections(**bad)


def test_configure_turns_automatic_full_collections_off() -> None:
    before = gc.get_threshold()
    try:
        gcpolicy.configure()
        young, middle, oldest = gc.get_threshold()
        assert young == gcpolicy.YOUNG_THRESHOLD and middle == gcpolicy.MIDDLE_THRESHOLD
        assert oldest >= 10**9
    finally:
        gc.set_threshold(*before)


async def test_collects_when_quiet_and_stops_with_the_event(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    activity = [0.0]
    collected: list[float] = []
    monkeypatch.setattr(gc, "collect", lambda: collected.append(now[0]) or 0)
    stop = asyncio.Event()
    task = asyncio.create_task(collect_on_schedule(
        FullCollections(interval_s=10, quiet_s=2, max_delay_s=20),
        lambda: activity[0], stop, clock=lambda: now[0], check_every_s=0.001))

    async def advance_to(t: float, busy: bool) -> None:
        while now[0] < t:
            now[0] += 0.5
            if busy:
                activity[0] = now[0]
            await asyncio.sleep(0.002)

    await advance_to(9.5, busy=False)
    assert collected == []  # the interval has not passed
    await advance_to(25, busy=True)
    assert collected == []  # busy, and not yet overdue
    await advance_to(31, busy=True)
    assert len(collected) == 1 and 30 <= collected[0] <= 31  # overdue: collected anyway
    await advance_to(41, busy=True)
    await advance_to(44, busy=False)
    assert len(collected) == 2 and 43 <= collected[1] <= 44  # 2 s of quiet after the interval
    stop.set()
    await asyncio.wait_for(task, 1)
