"""The ``Experiment`` kind: rules across its fields, building it, and its references.

One problem, one error: a rule only looks at fields that passed their own
shape check (``Value.get``), so nothing already reported is reported again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from analysis.spec import Direction, ExperimentSpec, MetricKind, MetricSpec, Step
from controlplane.config.errors import Errors
from controlplane.config.experiment_metrics import advise_experiment, check_guards, check_metrics
from controlplane.config.experiment_shapes import EXPERIMENT_SPEC
from controlplane.config.fields import Value
from controlplane.config.fields import opt as _opt
from controlplane.config.kinds import Accepted, Document, KindDef
from controlplane.experiment import (
    EXPERIMENT_KIND,
    AbTest,
    BlueGreen,
    CommandHook,
    EnvoySource,
    Experiment,
    Guard,
    HeaderMatch,
    HttpHook,
    MetricsSource,
    OnStall,
    PrometheusSource,
    Rolling,
    ShiftSettings,
    Strategy,
    Synchronized,
    Webhook,
)
from controlplane.model import API_VERSION, MODEL_SERVICE_KIND, ModelService

T = TypeVar("T")

SECTIONS = {
    "abtest": Strategy.ABTEST,
    "bluegreen": Strategy.BLUEGREEN,
    "rolling": Strategy.ROLLING,
    "synchronized": Strategy.SYNCHRONIZED,
}


def _is_text(v: Value) -> bool:
    return v.node.tag == "tag:yaml.org,2002:str"


def _strategy(spec: Value) -> Strategy | None:
    if not spec.has("strategy"):
        return Strategy.CANARY
    found = spec.get("strategy")
    return Strategy(found.text()) if found is not None else None


# --- rules within one document ------------------------------------------------------


def check_experiment(doc: Document, errors: Errors) -> None:
    spec = doc.spec
    if spec is None:
        return
    strategy = _strategy(spec)
    baseline, candidate = spec.get("baseline"), spec.get("candidate")
    if baseline is not None and candidate is not None and baseline.text() == candidate.text():
        doc.error(errors, candidate, candidate.path,
                  f"must differ from spec.baseline ('{baseline.text()}')")
    if strategy is not None:
        _check_sections(doc, spec, strategy, errors)
    steps = spec.get("steps")
    if steps is not None:
        _check_steps(doc, steps, errors)
    metrics = spec.get("metrics")
    kinds: dict[str, str] = {}
    if metrics is not None:
        kinds = check_metrics(doc, spec, metrics, strategy, errors)
    guards = spec.get("guards")
    if guards is not None and metrics is not None:
        check_guards(doc, guards, kinds, errors)
    abtest = spec.get("abtest")
    if abtest is not None and abtest.has("match") and abtest.has("weight"):
        doc.error(errors, abtest.fields()["weight"], f"{abtest.path}.weight",
                  "set either weight (a split) or match (a header cohort), not both")


def _check_sections(doc: Document, spec: Value, strategy: Strategy, errors: Errors) -> None:
    for name, owner in SECTIONS.items():
        if spec.has(name) and owner is not strategy:
            doc.error(errors, spec.fields()[name], f"{spec.path}.{name}",
                      f"only valid with strategy {owner.value} (strategy is "
                      f"{strategy.value})")
    if strategy is Strategy.ROLLING and not spec.has("rolling"):
        doc.error(errors, spec.fields().get("strategy") or spec, f"{spec.path}.rolling",
                  "strategy rolling needs a rolling section with an updateHook (how one pod "
                  "is updated)")
    if strategy is Strategy.CANARY and not spec.has("steps"):
        doc.error(errors, spec, f"{spec.path}.steps",
                  "strategy canary needs steps, e.g. steps: [5, 10, 25, 50]")
    if strategy is not Strategy.CANARY and spec.has("steps"):
        doc.error(errors, spec.fields()["steps"], f"{spec.path}.steps",
                  f"only valid with strategy canary (strategy {strategy.value} sets its own "
                  "traffic)")


def _step_weight(v: Value) -> float | None:
    if isinstance(v.data, dict):
        w = v.get("weight")
        return w.number() if w is not None else None
    return v.number()


def _check_steps(doc: Document, steps: Value, errors: Errors) -> None:
    previous: float | None = None
    for step in steps.items():
        if not step.ok:
            previous = None
            continue
        weight = _step_weight(step)
        if weight is None:
            previous = None
            continue
        if previous is not None and weight <= previous:
            at = step.get("weight") if isinstance(step.data, dict) else step
            assert at is not None
            doc.error(errors, at.mark, at.path,
                      f"steps must increase: {weight:g} is not above the previous "
                      f"step's {previous:g}")
        previous = weight


# --- building -------------------------------------------------------------------------


def _int(v: Value) -> int:
    return v.integer()


def _metric(v: Value) -> MetricSpec:
    f = v.fields()
    kind = MetricKind(f["kind"].text())
    d = MetricSpec("", kind, 0.0, 0.0)
    return MetricSpec(
        name=f["name"].text(),
        kind=kind,
        harm_margin=f["harmMargin"].number(),
        non_inferiority_margin=f["nonInferiorityMargin"].number(),
        min_samples=_opt(v, "minSamples", Value.integer, d.min_samples),
        gating=_opt(v, "gating", Value.flag, d.gating),
        min_effect=_opt(v, "minEffect", Value.number, d.min_effect),
        quantile=_opt(v, "quantile", Value.number, d.quantile),
        direction=_opt(v, "direction", lambda x: Direction(x.text()), d.direction),
        source=_opt(v, "source", Value.text, None),
        query=_opt(v, "query", Value.text, None),
        primary=_opt(v, "primary", Value.flag, False),
        threshold_s=_opt(v, "threshold", Value.number, None),
        numerator=_opt(v, "numerator", Value.text, None),
        denominator=_opt(v, "denominator", Value.text, None),
    )


def _step(v: Value) -> Step:
    if isinstance(v.data, dict):
        return Step(v.fields()["weight"].number(), _opt(v, "soak", _int, 0) / 1000)
    return Step(v.number(), 0.0)


def _at(doc: Document, v: Value) -> str:
    return f"{doc.file}:{v.mark.line}:{v.mark.column}: {v.path}"


def _source(doc: Document, v: Value | None) -> MetricsSource:
    if v is None:
        return EnvoySource()
    prom = v.get("prometheus")
    if prom is not None:
        d = PrometheusSource("")
        url = prom.fields()["url"]
        return PrometheusSource(
            url=url.text(),
            timeout_ms=_opt(prom, "timeout", _int, d.timeout_ms),
            pod_selector=_opt(prom, "podSelector", Value.text, d.pod_selector),
            at=_at(doc, url),
        )
    envoy = v.fields()["envoy"]
    return EnvoySource(_opt(envoy, "adminUrls", lambda x: tuple(u.text() for u in x.items()),
                            ()), at=_at(doc, envoy))


def _abtest(v: Value) -> AbTest:
    d = AbTest()
    match = v.get("match")
    return AbTest(
        weight=_opt(v, "weight", Value.number, d.weight),
        match=HeaderMatch(match.fields()["header"].text(), match.fields()["value"].text())
        if match is not None else None,
        min_samples=_opt(v, "minSamples", Value.integer, 0),
        max_duration_ms=_opt(v, "maxDuration", _int, d.max_duration_ms),
        promote_on_win=_opt(v, "promoteOnWin", Value.flag, d.promote_on_win),
    )


def _bluegreen(v: Value) -> BlueGreen:
    d = BlueGreen()
    return BlueGreen(
        mirror_percent=_opt(v, "mirrorPercent", Value.number, d.mirror_percent),
        mirror_duration_ms=_opt(v, "mirrorDuration", _int, d.mirror_duration_ms),
        rollback_window_ms=_opt(v, "rollbackWindow", _int, d.rollback_window_ms),
    )


def _rolling(v: Value) -> Rolling:
    hook = v.fields()["updateHook"]
    timeout = _opt(hook, "timeout", _int, 120_000)
    command = hook.get("command")
    update: CommandHook | HttpHook
    if command is not None:
        update = CommandHook(tuple(a.text() for a in command.items()), timeout)
    else:
        http = hook.fields()["http"]
        update = HttpHook(http.fields()["url"].text(), _opt(http, "method", Value.text, "POST"),
                          _opt(http, "body", Value.text, None), timeout)
    d = Rolling(update)
    return Rolling(
        update_hook=update,
        max_unavailable=_opt(v, "maxUnavailable", Value.integer, d.max_unavailable),
        drain_timeout_ms=_opt(v, "drainTimeout", _int, d.drain_timeout_ms),
        ready_timeout_ms=_opt(v, "readyTimeout", _int, d.ready_timeout_ms),
        version_header=_opt(v, "versionHeader", Value.text, d.version_header),
    )


def _synchronized(v: Value) -> Synchronized:
    d = Synchronized()
    return Synchronized(
        strict=_opt(v, "strict", Value.flag, d.strict),
        drain_timeout_ms=_opt(v, "drainTimeout", _int, d.drain_timeout_ms),
        rollback_window_ms=_opt(v, "rollbackWindow", _int, d.rollback_window_ms),
    )


def _shift(v: Value) -> ShiftSettings:
    d = ShiftSettings()
    return ShiftSettings(
        max_step=_opt(v, "maxStep", Value.number, d.max_step),
        interval_ms=_opt(v, "interval", _int, d.interval_ms),
        headroom=_opt(v, "headroom", Value.number, d.headroom),
        immediate_on_guard=_opt(v, "immediateOnGuard", Value.flag, d.immediate_on_guard),
    )


def _webhook(v: Value) -> Webhook:
    return Webhook(v.fields()["url"].text(), _opt(v, "secretFile", Value.text, None),
                   _opt(v, "format", Value.text, "json"))


def analysis_steps(strategy: Strategy, steps: tuple[Step, ...], abtest: AbTest | None,
                   bluegreen: BlueGreen | None, synchronized: Synchronized | None,
                   ) -> tuple[Step, ...]:
    """The judge's steps for each strategy (candidate percent and minimum soak)."""
    if strategy is Strategy.ABTEST:
        a = abtest or AbTest()
        return (Step(a.weight if a.match is None else 100.0, 0.0),)
    if strategy is Strategy.BLUEGREEN:
        b = bluegreen or BlueGreen()
        return (Step(b.mirror_percent, b.mirror_duration_ms / 1000),
                Step(100.0, b.rollback_window_ms / 1000))
    if strategy is Strategy.SYNCHRONIZED:
        s = synchronized or Synchronized()
        return (Step(100.0, s.rollback_window_ms / 1000),)
    if strategy is Strategy.ROLLING:
        return (Step(100.0, 0.0),)  # one step per batch of pods, set when a run starts
    return steps


def build_experiment(doc: Document) -> Experiment:
    spec = doc.spec
    assert spec is not None and doc.name is not None
    f = spec.fields()
    strategy = _strategy(spec) or Strategy.CANARY
    abtest = _opt(spec, "abtest", _abtest, None)
    if strategy is Strategy.ABTEST and abtest is None:
        abtest = AbTest()
    bluegreen = _opt(spec, "bluegreen", _bluegreen, None)
    synchronized = _opt(spec, "synchronized", _synchronized, None)
    no_steps: tuple[Step, ...] = ()
    steps = _opt(spec, "steps", lambda s: tuple(_step(x) for x in s.items()), no_steps)
    metrics = tuple(_metric(m) for m in f["metrics"].items())
    analysis = ExperimentSpec(
        name=doc.name,
        baseline=f["baseline"].text(),
        candidate=f["candidate"].text(),
        steps=analysis_steps(strategy, steps, abtest, bluegreen, synchronized),
        metrics=metrics,
        alpha=_opt(spec, "alpha", Value.number, 0.05),
        srm_alpha=_opt(spec, "srmAlpha", Value.number, 0.001),
        check_srm=not (abtest is not None and abtest.match is not None),
    )
    return Experiment(
        name=doc.name,
        service=_opt(spec, "service", Value.text, None),
        strategy=strategy,
        analysis=analysis,
        interval_ms=_opt(spec, "interval", _int, 60_000),
        metrics_source=_source(doc, spec.get("metricsSource")),
        guards=_opt(spec, "guards", lambda g: tuple(Guard(
            x.fields()["metric"].text(), x.fields()["above"].number(),
            _opt(x, "minRequests", Value.integer, 20)) for x in g.items()), ()),
        stall_budget_ms=_opt(spec, "stallBudget", _int, 1_800_000),
        on_stall=_opt(spec, "onStall", lambda x: OnStall(x.text()), OnStall.PAUSE),
        pause_before_promotion=_opt(spec, "pauseBeforePromotion", Value.flag, False),
        abtest=abtest,
        bluegreen=bluegreen,
        rolling=_opt(spec, "rolling", _rolling, None),
        synchronized=synchronized,
        rollback=_opt(spec, "rollback", _shift, ShiftSettings()),
        promotion=_opt(spec, "promotion", _shift, ShiftSettings()),
        notify=_opt(spec, "notify", lambda n: tuple(_webhook(x.fields()["webhook"])
                                                    for x in n.items()), ()),
    )


# --- rules against other documents --------------------------------------------------


def check_experiment_against(doc: Document, value: object, accepted: Accepted,
                             errors: Errors) -> None:
    assert isinstance(value, Experiment) and doc.spec is not None
    fields = doc.spec.fields()
    if value.service is None:
        doc.error(errors, doc.spec, "spec.service",
                  "missing: an experiment needs the ModelService whose traffic it moves "
                  "(documents without one are for `sluice replay` only)")
        return
    found = accepted.get(MODEL_SERVICE_KIND, value.service)
    service_field = fields["service"]
    if found is None:
        names = ", ".join(sorted(o.name for o in accepted.of_kind(MODEL_SERVICE_KIND)))
        doc.error(errors, service_field, service_field.path,
                  f"no ModelService named '{value.service}' (known: {names or 'none'})")
        return
    service = found.value
    assert isinstance(service, ModelService)
    versions = [v.name for v in service.versions]
    for role in ("baseline", "candidate"):
        name = getattr(value, role)
        if name not in versions:
            doc.error(errors, fields[role], fields[role].path,
                      f"service '{service.name}' has no version '{name}' (versions: "
                      f"{', '.join(versions)})")
    for other in accepted.of_kind(EXPERIMENT_KIND):
        theirs = other.value
        assert isinstance(theirs, Experiment)
        if theirs.service == value.service:
            doc.error(errors, service_field, service_field.path,
                      f"service '{value.service}' already has experiment '{theirs.name}' "
                      f"({other.where}); one experiment per service at a time")
            return


def experiment_references(value: object) -> tuple[tuple[str, str], ...]:
    assert isinstance(value, Experiment)
    return ((MODEL_SERVICE_KIND, value.service),) if value.service else ()


EXPERIMENT = KindDef(
    kind=EXPERIMENT_KIND,
    api_version=API_VERSION,
    spec=EXPERIMENT_SPEC,
    check=check_experiment,
    build=build_experiment,
    check_against=check_experiment_against,
    references=experiment_references,
    order=10,
    description="An experiment: a strategy that moves a service's traffic, judged by metrics "
    "(Sluice Experiment).",
    advise=advise_experiment,
)


def experiment_from_mapping(doc: Mapping[str, Any], filename: str = "<experiment>") -> Experiment:
    """An ``Experiment`` from a plain mapping (tests, benchmarks), through the same checks.

    References to other documents are not checked; raises ``ValueError`` listing
    every error.
    """
    from controlplane.config.loader import load_text

    load = load_text(yaml.safe_dump(dict(doc), sort_keys=False), filename)
    problems = [str(e) for e in load.file_errors]
    found = []
    for d in load.documents:
        problems.extend(str(e) for e in d.errors)
        if isinstance(d.value, Experiment):
            found.append(d.value)
    if problems or len(found) != 1:
        raise ValueError("\n".join(problems) or f"expected one Experiment, got {len(found)}")
    return found[0]
