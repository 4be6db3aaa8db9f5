"""The ``Experiment`` document as the control plane runs it: frozen, validated once.

``analysis`` (the statistics engine) receives only ``Experiment.analysis``, an
``analysis.spec.ExperimentSpec``; everything else here (strategy, metrics
source, guards, stall handling, per-strategy settings) is the control plane's.
Durations are integer milliseconds, thresholds in their metric's unit
(seconds for latency).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from analysis.spec import ExperimentSpec

EXPERIMENT_KIND = "Experiment"


class Strategy(enum.Enum):
    CANARY = "canary"
    ABTEST = "abtest"
    BLUEGREEN = "bluegreen"
    ROLLING = "rolling"
    SYNCHRONIZED = "synchronized"


class OnStall(enum.Enum):
    ROLLBACK = "rollback"
    PAUSE = "pause"


@dataclass(frozen=True)
class EnvoySource:
    admin_urls: tuple[str, ...] = ()  # empty: what connected proxies announce
    at: str = ""  # "file:line:column: field" of the setting, for messages


@dataclass(frozen=True)
class PrometheusSource:
    url: str
    timeout_ms: int = 5_000
    pod_selector: str = 'service="{{service}}",version="{{version}}"'
    at: str = ""  # "file:line:column: spec.metricsSource.prometheus.url", for messages


MetricsSource = EnvoySource | PrometheusSource


@dataclass(frozen=True)
class Guard:
    metric: str
    above: float  # rate, seconds, or the mean's unit
    min_requests: int = 20


@dataclass(frozen=True)
class HeaderMatch:
    header: str
    value: str


@dataclass(frozen=True)
class AbTest:
    weight: float = 50.0
    match: HeaderMatch | None = None
    min_samples: int = 0  # per arm; 0: the largest minSamples of the metrics
    max_duration_ms: int = 86_400_000
    promote_on_win: bool = False


@dataclass(frozen=True)
class BlueGreen:
    mirror_percent: float = 100.0
    mirror_duration_ms: int = 300_000
    rollback_window_ms: int = 600_000


@dataclass(frozen=True)
class CommandHook:
    argv: tuple[str, ...]
    timeout_ms: int = 120_000


@dataclass(frozen=True)
class HttpHook:
    url: str
    method: str = "POST"
    body: str | None = None
    timeout_ms: int = 120_000


@dataclass(frozen=True)
class Rolling:
    update_hook: CommandHook | HttpHook
    max_unavailable: int = 1
    drain_timeout_ms: int = 120_000
    ready_timeout_ms: int = 300_000
    version_header: str = "x-sluice-version"


@dataclass(frozen=True)
class Synchronized:
    strict: bool = False
    drain_timeout_ms: int = 60_000
    rollback_window_ms: int = 300_000


@dataclass(frozen=True)
class ShiftSettings:
    """How a rollback or a promotion moves traffic when the receiver lacks capacity."""

    max_step: float = 25.0  # percentage points per interval
    interval_ms: int = 10_000
    headroom: float = 0.25  # load per unit of capacity may grow this much at once
    immediate_on_guard: bool = False  # rollback only: a guard's rollback goes at once


@dataclass(frozen=True)
class Webhook:
    url: str
    secret_file: str | None = None  # HMAC-SHA256 signature header when set
    format: str = "json"  # "json" or "slack"


@dataclass(frozen=True)
class Experiment:
    name: str
    service: str | None  # None: only for offline replay
    strategy: Strategy
    analysis: ExperimentSpec
    interval_ms: int = 60_000
    metrics_source: MetricsSource = EnvoySource()
    guards: tuple[Guard, ...] = ()
    stall_budget_ms: int = 1_800_000
    on_stall: OnStall = OnStall.PAUSE
    pause_before_promotion: bool = False
    abtest: AbTest | None = None
    bluegreen: BlueGreen | None = None
    rolling: Rolling | None = None
    synchronized: Synchronized | None = None
    notify: tuple[Webhook, ...] = ()
    rollback: ShiftSettings = ShiftSettings()
    promotion: ShiftSettings = ShiftSettings()

    @property
    def baseline(self) -> str:
        return self.analysis.baseline

    @property
    def candidate(self) -> str:
        return self.analysis.candidate

    def identity(self) -> tuple[str | None, str, str, Strategy]:
        """What makes a run: changing any of these starts a new run (steps and metrics do not)."""
        return (self.service, self.baseline, self.candidate, self.strategy)
