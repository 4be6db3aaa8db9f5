"""One experiment run: looks, decisions and traffic, through every phase (the I/O loop).

Each turn of the loop does one thing: apply the current plan and wait until
every proxy ACKed it (the step's clock starts then), or take a look (read the
metrics source, judge, check guards, decide), or drive a strategy's stage
(drain and update pods, a synchronized switch), or carry out the outcome.
Decisions go to the journal before traffic changes (durable first). Manual
commands (promote, abort, pause, resume) are handled between turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from analysis.judge import JudgeState, Judgment, Look, start
from analysis.providers import MetricsProvider, ProviderError, Reading, Target
from analysis.providers.windows import windows_between
from analysis.replay import judgment_json, parse_line, window_line
from analysis.verdicts import Verdict
from controlplane.experiment import Experiment, Strategy, Webhook
from controlplane.model import ModelService, cluster_name
from controlplane.rollout import etas, plans, shifts, stages
from controlplane.rollout.journal import DECISION, LOOK, RUN, Journal
from controlplane.rollout.looks import (
    AbResult,
    Proposal,
    ab_done,
    ab_result,
    fold,
    propose,
    tripped,
)
from controlplane.rollout.machine import Event, Phase, RolloutState, stalled, transition
from controlplane.rollout.sync import ProxyView
from controlplane.routers import Router
from controlplane.routers.xds import XdsRouter
from controlplane.store import Store

log = logging.getLogger("sluice.rollout")
CATCH_UP_RETRY_S = 1.0  # how often a finished run retries writes the store refused

# Moves that expose the candidate more: not done unless recorded first.
EXPOSING = (Event.START, Event.ADVANCE, Event.PROMOTE, Event.CONCLUDE, Event.APPROVE,
            Event.RESUME)
COMMANDS = {"promote": Event.APPROVE, "abort": Event.ABORT, "pause": Event.PAUSE,
            "resume": Event.RESUME}
SYNC_POLL_S = 0.01


def _no_notify(body: dict[str, Any], hooks: tuple[Webhook, ...]) -> None:
    return None


@dataclass
class Deps:
    store: Store
    proxies: ProxyView
    provider_for: Callable[[Experiment], MetricsProvider]
    journal: Journal
    wall: Callable[[], float] = time.time
    # Queues a notification (never blocks): body, and the experiment's own targets.
    notify: Callable[[dict[str, Any], tuple[Webhook, ...]], None] = _no_notify
    # The router of a service (controlplane.routers); None: Sluice's own xDS.
    routers: Callable[[str], Router] | None = None

    def router(self, service: str) -> Router:
        if self.routers is not None:
            return self.routers(service)
        return XdsRouter(self.store, self.proxies)


@dataclass
class Command:
    name: str
    who: str
    done: asyncio.Future[tuple[bool, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


def new_run_id(experiment: Experiment, t: float) -> str:
    return f"{experiment.name}-{int(t)}-{uuid.uuid4().hex[:6]}"


class Runner:
    def __init__(self, experiment: Experiment, deps: Deps,
                 restored: dict[str, Any] | None = None) -> None:
        self.experiment = experiment
        self.deps = deps
        self.commands: asyncio.Queue[Command] = asyncio.Queue()
        self.held: str | None = None  # the service's document is frozen or missing
        self.report: dict[str, Any] = {}  # strategy figures (A/B result, switch window)
        self.last_judgment: dict[str, Any] | None = None
        self.note = ""  # what the run is waiting for right now
        self.prev: Reading | None = None
        self.prev_t = 0.0
        self.eta: dict[str, Any] | None = None
        self.next_look: float | None = None
        self.applied_revision = 0
        self.looks = 0
        self.decision_counts: dict[str, int] = {}  # by event, this process
        # Writes the store refused, owed to it: the run's latest state and, in order, the
        # decisions not yet recorded. A finished run keeps retrying until they land, so a
        # restart never restores a run from before a rollback it already carried out.
        self.unsaved = False
        self.unrecorded: list[dict[str, Any]] = []
        self.finished = False  # run() has returned: nobody serves commands
        now = deps.wall()
        if restored is not None:
            self.state = RolloutState.from_json(restored["state"])
            self.report = dict(restored.get("report") or {})
            self.analysis = self._analysis_spec()
            self.js = self._rebuild()
        else:
            self.state = RolloutState(run=new_run_id(experiment, now), started_at=now,
                                      updated_at=now)
            self.analysis = self._analysis_spec()
            self.js = start(self.analysis, now)
        self._provider: MetricsProvider | None = None

    # -- what others read

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def service_name(self) -> str:
        assert self.experiment.service is not None
        return self.experiment.service

    def service(self) -> ModelService | None:
        try:
            return self.deps.store.declared.service(self.service_name)
        except KeyError:
            return None

    def view(self) -> dict[str, Any]:
        s = self.state
        steps = self.analysis.steps
        return {
            "name": self.name, "service": self.experiment.service,
            "strategy": self.experiment.strategy.value,
            "baseline": self.experiment.baseline, "candidate": self.experiment.candidate,
            **s.to_json(), "steps": [st.weight for st in steps],
            "stepWeight": steps[min(s.step, len(steps) - 1)].weight,
            "held": self.held, "waitingFor": self.note, "looks": self.looks,
            "report": self.report, "judgment": self.last_judgment, "eta": self.eta,
        }

    # -- the loop

    def begin(self) -> None:
        """Starts a new run, or re-applies a restored one's traffic (synchronously, so it
        is in force before the next snapshot is built)."""
        if self.state.phase is not Phase.PENDING:
            self._apply()
            return
        if self.experiment.strategy is Strategy.ROLLING:
            svc = self.service()
            if svc is not None:
                self.state = replace(self.state, pods=plans.initial_pods(self.experiment, svc))
        self._event(Event.START, f"started: {self.experiment.strategy.value} of "
                    f"{self.experiment.candidate} against {self.experiment.baseline}")

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set() and not self.state.phase.terminal:
                self.catch_up()
                await self._turn(stop)
                await asyncio.sleep(0)  # a turn that found nothing to wait for still yields
            while self.behind and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CATCH_UP_RETRY_S)
                self.catch_up()
        finally:
            self.catch_up()
            # Commands that came while the run was ending are answered, never left
            # waiting (nothing reads the queue any more).
            self.finished = True
            while not self.commands.empty():
                cmd = self.commands.get_nowait()
                if not cmd.done.done():
                    cmd.done.set_result((False, f"the run is over ({self.state.phase.value})"))
            if self._provider is not None:
                await self._provider.close()

    @property
    def behind(self) -> bool:
        """Some write the store refused is still owed to it."""
        return self.unsaved or bool(self.unrecorded)

    def catch_up(self) -> None:
        """Retries what the store refused: the latest state, then the decisions in order."""
        if self.unsaved:
            self.save()
        self._flush_decisions()

    def _flush_decisions(self) -> None:
        while self.unrecorded:
            if not self.deps.journal.append(DECISION, self.name, self.unrecorded[0]):
                return
            self.unrecorded.pop(0)

    def update(self, experiment: Experiment) -> None:
        """Steps or metrics edited: they apply from the next look (history refolded)."""
        self.experiment = experiment
        self.analysis = self._analysis_spec()
        self.js = self._rebuild()
        if self._provider is not None:
            provider, self._provider = self._provider, None
            asyncio.get_running_loop().create_task(provider.close())

    async def command(self, name: str, who: str) -> tuple[bool, str]:
        if self.finished:
            return False, f"the run is over ({self.state.phase.value})"
        cmd = Command(name, who)
        await self.commands.put(cmd)
        return await cmd.done

    async def _turn(self, stop: asyncio.Event) -> None:
        if self.service() is None:
            self._event(Event.FAIL, f"service '{self.service_name}' no longer exists")
            return
        phase = self.state.phase
        if phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
            if shifts.pending(self.state):
                await shifts.step(self)
                return
            await stages.finish(self)
            if await self.wait_synced(self.experiment.interval_ms / 1000):
                done = "promoted" if phase is Phase.PROMOTING else "rolled back"
                self._event(Event.DONE, f"{done}: {self.state.reason}")
            return
        if not self.state.applied:
            await stages.prepare(self)
            if self.state.applied or self.state.phase is not phase:
                return
            if await self.wait_synced(self.experiment.interval_ms / 1000):
                t = self.deps.wall()
                self._event(Event.APPLIED, self.state.reason)
                if not self.state.applied:  # could not be recorded: try again shortly
                    await self.serve_commands(t + min(1.0, self.experiment.interval_ms / 1000))
                    return
                await stages.after_applied(self)
                self.prev = await self._read(t)
                self.next_look = t + self.experiment.interval_ms / 1000
            else:
                self._stall(self.deps.wall(), True, f"waiting for proxies: {self.note}")
            return
        deadline = self.next_look or self.deps.wall()
        if await self.serve_commands(deadline):
            return
        await self.look()

    # -- traffic

    def _apply(self) -> None:
        svc = self.service()
        if svc is None:
            return
        override = plans.traffic(self.experiment, svc, self.state)
        self.applied_revision = self.deps.router(self.service_name).apply(self.service_name,
                                                                          override)

    async def wait_synced(self, timeout: float) -> bool:
        """Until every proxy holds the applied traffic (True) or ``timeout`` (False);
        commands are served meanwhile."""
        deadline = self.deps.wall() + timeout
        versions = (self.experiment.baseline, self.experiment.candidate)
        while True:
            report = self.deps.router(self.service_name).in_effect(
                self.service_name, versions, self.applied_revision)
            if report.synced:
                self.note = ""
                return True
            self.note = report.describe()
            if self.deps.wall() >= deadline:
                return False
            if await self.serve_commands(min(deadline, self.deps.wall() + 0.05)):
                return False

    async def serve_commands(self, until: float) -> bool:
        """Serves manual commands until ``until``; True when one changed the run."""
        while True:
            left = until - self.deps.wall()
            if left <= 0:
                return False
            try:
                cmd = await asyncio.wait_for(self.commands.get(), left)
            except TimeoutError:
                return False
            before = self.state
            ok, message = self._command(cmd)
            cmd.done.set_result((ok, message))
            if self.state is not before:
                return True

    def _command(self, cmd: Command) -> tuple[bool, str]:
        event = COMMANDS[cmd.name]
        if self.state.phase.terminal:
            return False, f"the run is over ({self.state.phase.value})"
        if event is Event.APPROVE and not self.state.gate:
            return False, ("nothing to approve: promote approves a promotion that "
                           "pauseBeforePromotion is holding, after every gating metric passed "
                           "at the last step")
        before = self.state
        self._event(event, f"{cmd.name} by {cmd.who}")
        if self.state == before:
            return False, f"cannot {cmd.name} while {before.phase.value}"
        return True, f"{cmd.name}: now {self.state.phase.value}"

    # -- looks

    def target(self) -> Target:
        svc = self.service_name
        versions = (self.experiment.baseline, self.experiment.candidate)
        return Target(svc, versions, {v: cluster_name(svc, v) for v in versions},
                      self.analysis.metrics, self.experiment.interval_ms / 1000)

    def provider(self) -> MetricsProvider:
        if self._provider is None:
            self._provider = self.deps.provider_for(self.experiment)
        return self._provider

    async def _read(self, t: float) -> Reading | None:
        try:
            return await self.provider().read(self.target(), t)
        except ProviderError as exc:
            where = self.experiment.metrics_source.at
            self.note = (f"{where}: " if where else "") + f"{self.provider().name}: {exc}"
            log.warning("%s: %s", self.name, self.note)
            return None

    async def look(self) -> None:
        t = self.deps.wall()
        self.next_look = t + self.experiment.interval_ms / 1000
        reading = await self._read(t)
        if reading is None or self.prev is None:
            self.prev = reading or self.prev
            why = self.note if reading is None else "first reading of this step taken"
            self._decide(t, Proposal(Event.HOLD, f"no data: {why}", reading is None))
            return
        windows, excluded = windows_between(self.prev, reading, self.target(),
                                            stages.expected_split(self))
        self.prev_t, self.prev = self.prev.t, reading
        b, c = self.experiment.baseline, self.experiment.candidate
        look = Look(t, windows.get(c), windows.get(b), excluded)
        guard = tripped(self.experiment, look.candidate) if excluded is None else None
        judgment = None
        if self.experiment.strategy is Strategy.SYNCHRONIZED:
            proposal = stages.synchronized_proposal(self, t, guard)
        else:
            assert self.state.step_started is not None
            self.js, judgment = fold(self.js, look, self.state.step, self.state.step_started)
            proposal = self._propose(t, judgment, look, guard)
        self.looks += 1
        if judgment is not None:
            self.last_judgment = judgment_json(self.name, judgment)
            self.eta = etas.estimate(self, t, look, judgment, t - self.prev_t)
        self._record_look(t, look, judgment, proposal)
        self._decide(t, proposal)

    def _propose(self, t: float, judgment: Judgment, look: Look, guard: str | None) -> Proposal:
        proposal = propose(judgment, look, self.analysis.check_srm)
        if guard is not None:
            return Proposal(Event.ROLLBACK, guard, False)
        if proposal.event is Event.ROLLBACK:
            return proposal
        if self.experiment.strategy is Strategy.ABTEST:
            return self._ab_proposal(t, judgment, proposal)
        if self.held is not None and proposal.event in (Event.ADVANCE, Event.PROMOTE):
            return Proposal(Event.HOLD, f"held: {self.held}", False)
        return proposal

    def _ab_proposal(self, t: float, judgment: Judgment, proposal: Proposal) -> Proposal:
        n = judgment.metrics[0].n if judgment.metrics else {}
        why = ab_done(self.experiment, n, t - self.state.started_at)
        if why is None:
            if proposal.event in (Event.ADVANCE, Event.PROMOTE):
                return Proposal(Event.WAIT, f"collecting samples: {proposal.reason}", False)
            return proposal
        result: AbResult = ab_result(self.experiment, judgment.metrics)
        self.report["abtest"] = {**result.to_json(), "ended": why}
        ab = self.experiment.abtest
        unproven = [v.name for v in judgment.metrics if v.gating and v.verdict is not Verdict.PASS]
        if result.winner == "candidate" and ab is not None and ab.promote_on_win:
            if not unproven:
                return Proposal(Event.PROMOTE, f"A/B test ended ({why}): {result.reason}",
                                False)
            result = AbResult(result.winner, result.effects, f"{result.reason}, but not "
                              f"shown non-inferior on {', '.join(unproven)}: not promoted")
            self.report["abtest"] = {**result.to_json(), "ended": why}
        return Proposal(Event.CONCLUDE, f"A/B test ended ({why}): {result.reason}; "
                        f"{self.experiment.baseline} keeps the traffic", False)

    def _decide(self, t: float, proposal: Proposal) -> None:
        if self._stall(t, proposal.starving, proposal.reason):
            return
        self._event(proposal.event, proposal.reason)

    def _stall(self, t: float, starving: bool, reason: str) -> bool:
        """Tracks holding for lack of data; True when the stall budget decided."""
        self.state = stalled(self.state, t, starving)
        since = self.state.stalled_since
        budget = self.experiment.stall_budget_ms / 1000
        if since is None or t - since < budget or self.state.phase is Phase.PAUSED:
            return False
        event = Event.ROLLBACK if self.experiment.on_stall.value == "rollback" else Event.PAUSE
        self._event(event, f"stalled for {t - since:.0f}s (stallBudget {budget:g}s, onStall: "
                    f"{self.experiment.on_stall.value}): {reason}")
        return True

    # -- state changes

    def _event(self, event: Event, reason: str) -> None:
        before = self.state
        last = len(self.analysis.steps) - 1
        after = transition(before, event, self.deps.wall(), reason,
                           gated=self.experiment.pause_before_promotion, last_step=last)
        if after == before:
            return
        after = shifts.begin(self, before, after, reason.startswith("guard "))
        self.state = after
        recorded = self.save()
        decision: dict[str, Any] | None = None
        if (after.phase, after.step, after.gate) != (before.phase, before.step, before.gate):
            decision = {"run": after.run, "t": after.updated_at, "event": event.value,
                        "from": before.phase.value, "to": after.phase.value,
                        "step": after.step, "reason": reason}
            recorded = self._record_decision(decision) and recorded
        if not recorded and event in EXPOSING:
            # Durable first: a move that exposes the candidate more is not done unless it
            # is recorded; rollbacks, holds and bookkeeping still are (acting is safer
            # than not, and catch_up writes them once the store takes writes again).
            if decision is not None and decision in self.unrecorded:
                self.unrecorded.remove(decision)  # it did not happen
            self.state = before
            why = f"{event.value} not applied: the state store refused to record it"
            log.error("%s: %s", self.name, why)
            self._event(Event.HOLD, why)
            return
        self.decision_counts[event.value] = self.decision_counts.get(event.value, 0) + 1
        if (after.phase, after.step, after.gate) != (before.phase, before.step, before.gate):
            log.info("%s: %s -> %s (step %d): %s", self.name, before.phase.value,
                     after.phase.value, after.step + 1, reason)
        if after.phase is not before.phase or event is Event.ROLLBACK:
            self._notify(event, before, reason)
        if (after.phase, after.step, after.stage, after.pods) != (
                before.phase, before.step, before.stage, before.pods) or not after.applied:
            self._apply()

    def _notify(self, event: Event, before: RolloutState, reason: str) -> None:
        from controlplane.notify import event as body

        after = self.state
        common = {"experiment": self.name, "service": self.experiment.service,
                  "strategy": self.experiment.strategy.value, "run": after.run,
                  "phase": after.phase.value, "previousPhase": before.phase.value,
                  "step": after.step + 1, "reason": reason}
        hooks = self.experiment.notify
        if after.phase is not before.phase:
            self.deps.notify(body("phase", **common), hooks)
        if after.phase is Phase.ROLLING_BACK and before.phase is not Phase.ROLLING_BACK:
            evidence = (self.last_judgment or {}).get("metrics", [])
            self.deps.notify(body("rollback", **common, evidence=evidence), hooks)
        if reason.startswith("stalled"):
            self.deps.notify(body("stall", **common), hooks)

    def set_state(self, state: RolloutState) -> None:
        """A strategy stage moved (pods, a switch): record it, then apply its traffic."""
        self.state = replace(state, updated_at=self.deps.wall())
        self.save()
        self._apply()

    def save(self) -> bool:
        saved = self.deps.journal.put(RUN, self.name, {
            "state": self.state.to_json(), "identity": list(map(str, self.experiment.identity())),
            "service": self.experiment.service, "report": self.report,
        })
        self.unsaved = not saved
        return saved

    def _record_decision(self, decision: dict[str, Any]) -> bool:
        self._flush_decisions()  # earlier decisions first: the record keeps their order
        if not self.unrecorded and self.deps.journal.append(DECISION, self.name, decision):
            return True
        self.unrecorded.append(decision)
        return False

    def _record_look(self, t: float, look: Look, judgment: Judgment | None,
                     proposal: Proposal) -> None:
        windows = [window_line(w) for w in (look.baseline, look.candidate) if w is not None]
        self.deps.journal.append(LOOK, self.name, {
            "run": self.state.run, "t": t, "step": self.state.step,
            "stepStarted": self.state.step_started, "windows": windows,
            "excluded": look.excluded, "decision": proposal.event.value,
            "reason": proposal.reason, "counted": judgment is not None,
            "judgment": self.last_judgment if judgment is not None else None,
        })

    # -- the judge

    def _analysis_spec(self) -> Any:
        spec = self.experiment.analysis
        svc = self.service()
        if self.experiment.strategy is Strategy.ROLLING and svc is not None:
            spec = replace(spec, steps=stages.rolling_steps(self.experiment, svc))
        if svc is not None and svc.load_balancing.hash_key is not None and spec.check_srm:
            # The route picks the version from the request's hash key (sticky users),
            # so versions split users, not requests: request counts scatter around the
            # weights far more than a per-request test allows.
            spec = replace(spec, check_srm=False)
            self.report["srm"] = ("off: versions are sticky per hash key, so requests do not "
                                  "split like the weights")
        return spec

    def _rebuild(self) -> JudgeState:
        """The judge's statistics from the recorded looks of this run (deterministic)."""
        js = start(self.analysis, self.state.started_at)
        self.looks = 0
        for record in self.deps.journal.events(LOOK, self.name, self.state.run):
            if not record.get("counted"):
                continue
            windows = {}
            for line in record.get("windows", []):
                w = parse_line(line, 0).window
                windows[w.version] = w
            look = Look(float(record["t"]), windows.get(self.experiment.candidate),
                        windows.get(self.experiment.baseline), record.get("excluded"))
            started = record.get("stepStarted")
            step = min(int(record.get("step", 0)), len(self.analysis.steps) - 1)
            js, _ = fold(js, look, step, float(started) if started is not None else look.t)
            self.looks += 1
            self.last_judgment = record.get("judgment")
        return js


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
