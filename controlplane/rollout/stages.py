"""The I/O steps of strategies that do more than set weights: rolling and synchronized.

Rolling, per batch of pods: mark them DRAINING (no new requests), wait until
Envoy (or the pod) reports none in flight, take them out of every cluster,
run the update hook, wait until each answers healthy as the candidate, then
put them in the candidate's cluster; the batch is then judged against the
rest. A rollback reverts updated pods the same way.

Synchronized: the candidate's cluster is warm and ACKed everywhere; with
``strict`` every proxy first answers 503 + Retry-After (so no client sees two
versions), the old version drains, then the one route change goes out. The
switch window (first to last proxy ACK) and the time until the old version
has nothing in flight are reported.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from analysis.spec import Step
from controlplane.experiment import Experiment, Rolling, Strategy
from controlplane.model import ModelService, cluster_name
from controlplane.rollout import plans
from controlplane.rollout.looks import Proposal
from controlplane.rollout.machine import Event, Phase
from controlplane.rollout.plans import PodState
from controlplane.rollout.pods import (
    envoy_active_requests,
    pod_running_requests,
    pod_version,
    run_hook,
)

if TYPE_CHECKING:
    from controlplane.rollout.runner import Runner

POLL_S = 0.05


def rolling_steps(experiment: Experiment, service: ModelService) -> tuple[Step, ...]:
    """One step per batch; its weight is the share of capacity updated after it."""
    pods = plans.fleet(experiment, service)
    size = experiment.rolling.max_unavailable if experiment.rolling else 1
    total = sum(e.weight for e in pods) or 1
    steps = []
    for i in range(plans.batches(len(pods), size)):
        done = sum(e.weight for e in pods[:(i + 1) * size])
        steps.append(Step(round(100.0 * done / total, 2), 0.0))
    return tuple(steps)


def expected_split(runner: Runner) -> dict[str, float] | None:
    """The traffic split the plan asks for, for the sample-ratio check."""
    svc = runner.service()
    if svc is None:
        return None
    override = plans.traffic(runner.experiment, svc, runner.state)
    weights = override.weight_map
    for mirror in override.traffic.mirrors:
        weights[mirror.version] = mirror.percent
    return weights


def synchronized_proposal(runner: Runner, t: float, guard: str | None) -> Proposal:
    if guard is not None:
        return Proposal(Event.ROLLBACK, guard, False)
    sync = runner.experiment.synchronized
    window = (sync.rollback_window_ms if sync else 300_000) / 1000
    started = runner.state.step_started or t
    if t - started >= window:
        return Proposal(Event.PROMOTE, f"no guard tripped in the {window:g}s rollback window",
                        False)
    return Proposal(Event.WAIT, f"rollback window: {t - started:.0f}s of {window:g}s", False)


def _admin_urls(runner: Runner) -> list[str]:
    source = runner.experiment.metrics_source
    urls = list(getattr(source, "admin_urls", ()) or ())
    return urls or runner.deps.proxies.admin_urls()


async def _drained(runner: Runner, version: str, hosts: tuple[str, ...] | None,
                   timeout_s: float) -> float | None:
    """Waits until nothing is in flight on ``hosts`` of ``version``; seconds it took."""
    started = runner.deps.wall()
    cluster = cluster_name(runner.service_name, version)
    while runner.deps.wall() - started < timeout_s:
        active = await envoy_active_requests(_admin_urls(runner), cluster, hosts)
        if active is None and hosts is not None:
            counts = await asyncio.gather(*(pod_running_requests(h) for h in hosts))
            active = None if any(c is None for c in counts) else sum(c or 0 for c in counts)
        if active == 0:
            return runner.deps.wall() - started
        runner.note = (f"draining {', '.join(hosts) if hosts else version}: "
                       f"{'unknown' if active is None else active} in flight")
        await asyncio.sleep(POLL_S if active is not None else 0.5)
    return None


async def _ready(runner: Runner, pod: str, version: str, rolling: Rolling) -> bool:
    svc = runner.service()
    path = svc.health_check.path if svc is not None and svc.health_check else "/health"
    deadline = runner.deps.wall() + rolling.ready_timeout_ms / 1000
    while runner.deps.wall() < deadline:
        if await pod_version(pod, path, rolling.version_header) == version:
            return True
        runner.note = f"waiting for {pod} to answer healthy as {version}"
        await asyncio.sleep(0.2)
    return False


async def _update(runner: Runner, pods: tuple[str, ...], version: str) -> str | None:
    rolling = runner.experiment.rolling
    assert rolling is not None
    failures = await asyncio.gather(*(run_hook(rolling.update_hook, p, version) for p in pods))
    for pod, failure in zip(pods, failures, strict=True):
        if failure is not None:
            return f"{pod}: {failure}"
    ready = await asyncio.gather(*(_ready(runner, p, version, rolling) for p in pods))
    late = [p for p, ok in zip(pods, ready, strict=True) if not ok]
    if late:
        return (f"{', '.join(late)} did not answer healthy as {version} within "
                f"{rolling.ready_timeout_ms / 1000:g}s")
    return None


async def prepare(runner: Runner) -> None:
    """Strategy work before a step's traffic can be applied and judged."""
    if runner.state.phase not in (Phase.PROGRESSING, Phase.HOLDING, Phase.PAUSED):
        return
    if runner.experiment.strategy is Strategy.ROLLING:
        await _rolling_batch(runner)
    elif runner.experiment.strategy is Strategy.SYNCHRONIZED:
        await _switch(runner)


async def _rolling_batch(runner: Runner) -> None:
    rolling, svc = runner.experiment.rolling, runner.service()
    if rolling is None or svc is None or runner.state.phase is Phase.PAUSED:
        return
    batch = plans.batch_of(runner.experiment, svc, runner.state.step)
    todo = tuple(p for p in batch if p not in plans.pods_in(runner.state, PodState.CANDIDATE))
    if not todo:
        return
    if runner.state.stage in ("", "judging"):
        runner.set_state(replace(plans.with_pods(runner.state, todo, PodState.DRAINING),
                                 stage="draining"))
        await runner.wait_synced(rolling.drain_timeout_ms / 1000)
    if runner.state.stage == "draining":
        await _drained(runner, runner.experiment.baseline, todo,
                       rolling.drain_timeout_ms / 1000)
        runner.set_state(replace(plans.with_pods(runner.state, todo, PodState.UPDATING),
                                 stage="updating"))
        await runner.wait_synced(rolling.drain_timeout_ms / 1000)
    failure = await _update(runner, todo, runner.experiment.candidate)
    if failure is not None:
        runner.set_state(replace(runner.state, stage=""))
        runner._event(Event.ROLLBACK, f"rolling update failed: {failure}")
        return
    runner.set_state(replace(plans.with_pods(runner.state, todo, PodState.CANDIDATE),
                             stage="judging"))


async def _switch(runner: Runner) -> None:
    sync = runner.experiment.synchronized
    if sync is None or runner.state.stage == "switched" or runner.state.phase is Phase.PAUSED:
        return
    interval = runner.experiment.interval_ms / 1000
    if runner.state.stage == "" and not await runner.wait_synced(interval):
        return  # the candidate is not warm on every proxy yet
    report: dict[str, object] = {"strict": sync.strict}
    t0 = runner.deps.wall()
    if sync.strict:
        if runner.state.stage != "blackout":
            runner.set_state(replace(runner.state, stage="blackout"))
        await runner.wait_synced(sync.drain_timeout_ms / 1000)
        drained = await _drained(runner, runner.experiment.baseline, None,
                                 sync.drain_timeout_ms / 1000)
        report["oldDrainedBeforeSwitchMs"] = None if drained is None else round(drained * 1e3)
    switch_at = runner.deps.wall()
    runner.set_state(replace(runner.state, stage="switched"))
    acked: dict[str, float] = {}
    deadline = switch_at + max(interval, 30.0)
    versions = (runner.experiment.baseline, runner.experiment.candidate)
    while runner.deps.wall() < deadline:
        now = runner.deps.wall()
        seen = runner.deps.proxies.sync(runner.service_name, versions, runner.applied_revision)
        if seen.built:
            for node in set(seen.proxies) - set(seen.pending) - {n for n, _ in seen.nacked}:
                acked.setdefault(node, now)
        if seen.synced:
            break
        await asyncio.sleep(0.005)
    if acked:
        first, last = min(acked.values()), max(acked.values())
        report.update(proxies=len(acked), firstAckMs=round((first - switch_at) * 1e3, 1),
                      lastAckMs=round((last - switch_at) * 1e3, 1),
                      switchWindowMs=round((last - first) * 1e3, 1))
    if sync.strict:
        report["unavailableMs"] = round((runner.deps.wall() - t0) * 1e3, 1)
    runner.report["synchronized"] = report


async def after_applied(runner: Runner) -> None:
    """After the switch: how long until the old version has nothing in flight."""
    if runner.experiment.strategy is not Strategy.SYNCHRONIZED:
        return
    sync = runner.experiment.synchronized
    report = runner.report.setdefault("synchronized", {})
    if sync is None or "oldDrainedMs" in report:
        return
    drained = await _drained(runner, runner.experiment.baseline, None,
                             sync.drain_timeout_ms / 1000)
    report["oldDrainedMs"] = None if drained is None else round(drained * 1e3, 1)
    runner.save()


async def finish(runner: Runner) -> None:
    """A rolling rollback reverts the updated pods before the run can end."""
    if runner.experiment.strategy is not Strategy.ROLLING:
        return
    if runner.state.phase is not Phase.ROLLING_BACK:
        return
    rolling = runner.experiment.rolling
    assert rolling is not None
    state = runner.state
    untouched = plans.pods_in(state, PodState.DRAINING)
    if untouched:
        runner.set_state(plans.with_pods(state, untouched, PodState.BASELINE))
    changed = plans.pods_in(runner.state, PodState.CANDIDATE, PodState.REVERTING,
                            PodState.UPDATING)
    if not changed:
        return
    serving = plans.pods_in(runner.state, PodState.CANDIDATE)
    if serving:
        runner.set_state(plans.with_pods(runner.state, serving, PodState.REVERTING))
        await runner.wait_synced(rolling.drain_timeout_ms / 1000)
        await _drained(runner, runner.experiment.candidate, serving,
                       rolling.drain_timeout_ms / 1000)
    runner.set_state(plans.with_pods(runner.state, changed, PodState.UPDATING))
    failure = await _update(runner, changed, runner.experiment.baseline)
    if failure is not None:
        runner._event(Event.FAIL, f"rollback could not revert pods: {failure}")
        return
    runner.set_state(plans.with_pods(runner.state, changed, PodState.BASELINE))
