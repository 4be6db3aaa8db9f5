"""Builds the Grafana dashboard for Sluice's experiments from code (grafana-foundation-sdk).

    python -m manifests.dashboards.build          # rewrite sluice-experiments.json
    python -m manifests.dashboards.build --check  # exit 1 when the JSON is stale

Panels read the series ``controlplane/metrics_experiments.py`` exports: the
effective and declared split per version, each experiment's phase and step,
every metric's estimate with its confidence sequence, e-values and verdicts,
judged latency quantiles, requests and errors per version, decisions by kind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "sluice-experiments.json"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
EXP = 'experiment=~"$experiment"'


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DS).ref_id(ref)


def series(title: str, unit: str, *queries: prometheus.Dataquery,
           height: int = 8, span: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).height(height).span(span).datasource(DS)
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def build() -> dict[str, object]:
    board = (
        dashboard.Dashboard("Sluice experiments")
        .uid("sluice-experiments")
        .tags(["sluice", "canary", "llm"])
        .refresh("10s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus")
                       .type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("experiment").label("Experiment").datasource(DS)
            .query("label_values(sluice_experiment_phase, experiment)")
            .multi(True).include_all(True))
        .with_row(dashboard.Row("Where each experiment stands"))
        .with_panel(
            stat.Panel().title("Phase").datasource(DS).height(4).span(8)
            .with_target(query(f"sluice_experiment_phase{{{EXP}}} == 1",
                               "{{experiment}}: {{phase}}")))
        .with_panel(
            stat.Panel().title("Step").datasource(DS).height(4).span(8)
            .with_target(query(f"sluice_experiment_step{{{EXP}}}", "{{experiment}}")))
        .with_panel(
            stat.Panel().title("Candidate share of the step").unit("percent").datasource(DS)
            .height(4).span(8)
            .with_target(query(f"sluice_experiment_step_weight_percent{{{EXP}}}",
                               "{{experiment}}")))
        .with_panel(series(
            "Traffic split per version (effective and declared)", "percent",
            query("sluice_service_weight_percent", "{{service}}/{{version}} ({{set_by}})"),
            query("sluice_service_declared_weight_percent", "{{service}}/{{version}} declared"),
            span=24))
        .with_row(dashboard.Row("Evidence"))
        .with_panel(series(
            "Candidate / baseline, with its anytime-valid interval", "none",
            query(f"sluice_experiment_metric_estimate{{{EXP}}}", "{{metric}} estimate"),
            query(f"sluice_experiment_metric_interval_lower{{{EXP}}}", "{{metric}} lower"),
            query(f"sluice_experiment_metric_interval_upper{{{EXP}}}", "{{metric}} upper")))
        .with_panel(series(
            "Evidence of harm (p-value; rollback at alpha / gating metrics)", "none",
            query(f"sluice_experiment_metric_pvalue{{{EXP}}}", "{{metric}} p")))
        .with_panel(
            table.Panel().title("Verdicts").datasource(DS).height(6).span(12)
            .with_target(query(f"sluice_experiment_metric_verdict{{{EXP}}} == 1",
                               "{{metric}}: {{verdict}}").instant()))
        .with_panel(series(
            "Latency quantile as judged, per version", "s",
            query(f"sluice_experiment_latency_quantile_seconds{{{EXP}}}",
                  "{{metric}} {{version}}")))
        .with_row(dashboard.Row("Traffic and decisions"))
        .with_panel(series(
            "Requests judged per version (rate)", "reqps",
            query(f"rate(sluice_experiment_requests{{{EXP}}}[1m])", "{{version}} requests"),
            query(f"rate(sluice_experiment_errors{{{EXP}}}[1m])", "{{version}} errors")))
        .with_panel(series(
            "Decisions by kind", "short",
            query(f"increase(sluice_experiment_decisions_total{{{EXP}}}[5m])",
                  "{{experiment}} {{kind}}")))
        .with_panel(series(
            "Proxies and config", "short",
            query("sluice_xds_connected_proxies", "connected proxies"),
            query("sum(rate(sluice_xds_nacks_total[5m]))", "NACKs / s"),
            query('sluice_config_documents{state!="ok"}', "{{kind}} {{state}}"), span=24))
    )
    built: dict[str, object] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(
        board.build()))
    return built


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m manifests.dashboards.build")
    parser.add_argument("--check", action="store_true", help="fail when the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    current = OUT.read_text(encoding="utf-8") if OUT.exists() else None
    if current == text:
        return 0
    if args.check:
        print(f"{OUT} is out of date: run python -m manifests.dashboards.build", file=sys.stderr)
        return 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
