"""Per-service, per-version and per-experiment series on ``/metrics``, read at scrape time.

A collector rather than gauges set here and there: every scrape reports the
current weights, phases and evidence, and nothing stale survives a removed
service or experiment. Names:

- ``sluice_service_weight_percent{service,version,set_by}`` effective split,
  ``sluice_service_declared_weight_percent{service,version}`` the file's;
- ``sluice_experiment_phase{experiment,service,strategy,phase}`` 1 for the
  current phase, ``sluice_experiment_step`` (1-based) and
  ``sluice_experiment_step_weight_percent``;
- ``sluice_experiment_requests{experiment,version}`` and
  ``sluice_experiment_errors{experiment,version}`` judged so far in the run;
- per metric: ``sluice_experiment_metric_estimate``,
  ``..._interval_lower``/``..._interval_upper``, ``..._evalue``,
  ``..._pvalue``, ``..._verdict{verdict}`` (1 for the current verdict), and
  ``sluice_experiment_latency_quantile_seconds{experiment,metric,version}``,
  ``sluice_experiment_metric_coarse_buckets{experiment,metric}`` (latency
  quantiles: 1 when the baseline quantile's bucket is too wide ever to show
  the margin, so the metric holds until a slow_rate metric or finer buckets
  replace it; see the verdict's reason);
- ``sluice_experiment_metric_eta_seconds{experiment,metric,outcome}`` until a
  metric can pass or fail at the current effect and traffic;
- ``sluice_experiment_decisions_total{experiment,kind}`` in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from analysis.verdicts import Verdict
from controlplane.rollout.machine import Phase
from controlplane.rollout.manager import RolloutManager
from controlplane.store import Store


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


class ExperimentCollector(Collector):
    def __init__(self, store: Store, manager: RolloutManager) -> None:
        self.store = store
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        yield from self._services()
        yield from self._experiments()

    def _services(self) -> Iterator[Metric]:
        weight = GaugeMetricFamily("sluice_service_weight_percent",
                                   "Effective traffic percent per version",
                                   labels=["service", "version", "set_by"])
        declared = GaugeMetricFamily("sluice_service_declared_weight_percent",
                                     "Traffic percent per version as the file declares it",
                                     labels=["service", "version"])
        for svc in self.store.state.services:
            override = self.store.override(svc.name)
            owner = override.owner if override else "config"
            for v in svc.versions:
                weight.add_metric([svc.name, v.name, owner], v.weight)
        for svc in self.store.declared.services:
            for v in svc.versions:
                declared.add_metric([svc.name, v.name], v.weight)
        yield weight
        yield declared

    def _experiments(self) -> Iterator[Metric]:
        labels = ["experiment"]
        phase = GaugeMetricFamily("sluice_experiment_phase", "1 for the run's current phase",
                                  labels=[*labels, "service", "strategy", "phase"])
        step = GaugeMetricFamily("sluice_experiment_step", "Current step (1-based)",
                                 labels=labels)
        step_weight = GaugeMetricFamily("sluice_experiment_step_weight_percent",
                                        "Candidate percent of the current step", labels=labels)
        requests = GaugeMetricFamily("sluice_experiment_requests",
                                     "Requests judged so far in the run",
                                     labels=[*labels, "version"])
        errors = GaugeMetricFamily("sluice_experiment_errors", "Errors judged so far in the run",
                                   labels=[*labels, "version"])
        per_metric = {
            key: GaugeMetricFamily(f"sluice_experiment_metric_{key}", text,
                                   labels=[*labels, "metric"])
            for key, text in (("estimate", "Candidate / baseline estimate"),
                              ("interval_lower", "Lower end of the confidence sequence"),
                              ("interval_upper", "Upper end of the confidence sequence"),
                              ("evalue", "E-value against no harm"),
                              ("pvalue", "Anytime-valid p-value for harm"))
        }
        verdict = GaugeMetricFamily("sluice_experiment_metric_verdict",
                                    "1 for the metric's current verdict",
                                    labels=[*labels, "metric", "verdict"])
        quantile = GaugeMetricFamily("sluice_experiment_latency_quantile_seconds",
                                     "Latency quantile as judged",
                                     labels=[*labels, "metric", "version"])
        coarse = GaugeMetricFamily("sluice_experiment_metric_coarse_buckets",
                                   "1 when the latency quantile's bucket is too wide ever to "
                                   "show non-inferiority", labels=[*labels, "metric"])
        eta = GaugeMetricFamily("sluice_experiment_metric_eta_seconds",
                                "Estimated seconds until the metric can pass or fail at the "
                                "current effect and traffic (absent: not at all)",
                                labels=[*labels, "metric", "outcome"])
        decisions = CounterMetricFamily("sluice_experiment_decisions",
                                        "Decisions taken (by kind) in this process",
                                        labels=[*labels, "kind"])
        for name, runner in sorted({**self.manager.runners, **self.manager.removed}.items()):
            e = runner.experiment
            for p in Phase:
                phase.add_metric([name, runner.service_name, e.strategy.value, p.value],
                                 1.0 if runner.state.phase is p else 0.0)
            view = runner.view()
            step.add_metric([name], runner.state.step + 1)
            step_weight.add_metric([name], float(view["stepWeight"]))
            for kind, count in runner.decision_counts.items():
                decisions.add_metric([name, kind], count)
            for row in (runner.eta or {}).get("metrics", []):
                for outcome, key in (("pass", "passInS"), ("fail", "failInS")):
                    if (x := _finite(row.get(key))) is not None:
                        eta.add_metric([name, str(row["metric"]), outcome], x)
            judgment = runner.last_judgment or {}
            counted = False
            for m in judgment.get("metrics", []):
                self._metric(name, m, per_metric, verdict, quantile, e)
                flag = _finite((m.get("details") or {}).get("coarse_buckets"))
                if flag is not None:
                    coarse.add_metric([name, str(m["name"])], flag)
                if m.get("kind") == "error_rate" and not counted:
                    counted = True
                    self._counts(name, m, requests, errors, e)
        yield from (phase, step, step_weight, requests, errors, *per_metric.values(), verdict,
                    quantile, coarse, decisions)

    @staticmethod
    def _counts(name: str, m: dict[str, Any], requests: GaugeMetricFamily,
                errors: GaugeMetricFamily, e: Any) -> None:
        n, details = m.get("n") or {}, m.get("details") or {}
        for role, version in (("candidate", e.candidate), ("baseline", e.baseline)):
            if (x := _finite(n.get(role))) is not None:
                requests.add_metric([name, version], x)
            if (x := _finite(details.get(f"events_{role}"))) is not None:
                errors.add_metric([name, version], x)

    @staticmethod
    def _metric(name: str, m: dict[str, Any], per_metric: dict[str, GaugeMetricFamily],
                verdict: GaugeMetricFamily, quantile: GaugeMetricFamily, e: Any) -> None:
        metric = str(m["name"])
        lo, hi = (m.get("interval") or [None, None])[:2]
        for key, value in (("estimate", m.get("estimate")), ("interval_lower", lo),
                           ("interval_upper", hi), ("evalue", m.get("evalue")),
                           ("pvalue", m.get("pvalue"))):
            if (x := _finite(value)) is not None:
                per_metric[key].add_metric([name, metric], x)
        for v in Verdict:
            verdict.add_metric([name, metric, v.value], 1.0 if m.get("verdict") == v.value
                               else 0.0)
        details = m.get("details") or {}
        roles = {"candidate": e.candidate, "baseline": e.baseline}
        if m.get("kind") == "latency":
            for role, version in roles.items():
                if (q := _finite(details.get(f"q_{role}_s"))) is not None:
                    quantile.add_metric([name, metric, version], q)
