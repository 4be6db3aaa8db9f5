"""The metrics provider for an experiment's ``metricsSource``."""

from __future__ import annotations

from analysis.providers import MetricsProvider
from controlplane.experiment import EnvoySource, Experiment, PrometheusSource
from controlplane.rollout.sync import ProxyView


def provider_for(experiment: Experiment, proxies: ProxyView) -> MetricsProvider:
    source = experiment.metrics_source
    if isinstance(source, PrometheusSource):
        from analysis.providers.prometheus import PrometheusProvider

        return PrometheusProvider(source.url, source.timeout_ms / 1000, source.pod_selector)
    assert isinstance(source, EnvoySource)
    from analysis.providers.envoy import EnvoyStatsProvider

    if source.admin_urls:
        return EnvoyStatsProvider(source.admin_urls)
    return EnvoyStatsProvider(proxies.admin_urls)
