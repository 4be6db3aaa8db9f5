"""Shapes of the routing sections of a ModelService (load-balancing tuning, failover,
retries, the offline class); ``shapes`` puts them into ``MODEL_SERVICE_SPEC``."""

from __future__ import annotations

from controlplane.config.fields import Duration, Field, Float, Int, List, Obj, Str
from controlplane.model import RETRY_CONDITIONS

__all__ = ["FAILOVER", "LOAD_REPORT", "RESPONSE_TIME", "RETRIES", "offline_shape"]

RESPONSE_TIME = Obj(
    description="How measured response times become endpoint weights ({} for the defaults).",
    fields=(
        Field("interval", Duration(), "Time between weight updates (and load reports).",
              default="2s"),
        Field("hysteresis", Float(minimum=0.0, maximum=0.9),
              "A weight changes only when its target differs by more than this fraction.",
              default=0.15),
        Field("maxStep", Float(exclusive_minimum=1.0, maximum=10.0),
              "A weight moves at most by this factor per update.", default=1.5),
        Field("floor", Float(exclusive_minimum=0.0, maximum=1.0),
              "No endpoint gets less than this fraction of the mean weight.", default=0.05),
        Field("staleAfter", Duration(),
              "Without fresh signals for this long an endpoint keeps its last weight.",
              default="10s"),
        Field("prometheus", Str(pattern=r"^https?://[^\s]{1,250}$", hint="an http(s) URL"),
              "A Prometheus that scrapes the pods: their vllm:num_requests_waiting and "
              "vllm:kv_cache_usage_perc (by instance = address:port) refine the weights."),
    ),
)

LOAD_REPORT = Obj(
    description="Envoy's client_side_weighted_round_robin, driven by ORCA reports from the "
    "pods ({} for the defaults).",
    fields=(
        Field("blackoutPeriod", Duration(positive=False),
              "A new endpoint's reports are used only after this long.", default="1s"),
        Field("weightUpdatePeriod", Duration(), "How often Envoy recomputes weights.",
              default="1s"),
        Field("weightExpirationPeriod", Duration(),
              "Without reports for this long an endpoint falls back to the mean weight.",
              default="3m"),
        Field("errorUtilizationPenalty", Float(minimum=0.0, maximum=100.0),
              "Weight penalty per error rate (errors per second / queries per second).",
              default=1.0),
    ),
)

FAILOVER = Obj(
    description="Priority failover and panic mode ({} for the defaults).",
    fields=(
        Field("overprovisioningFactor", Int(minimum=100, maximum=100_000),
              "A priority keeps min(100 %, healthy share × factor / 100) of the traffic.",
              default=140),
        Field("panicThreshold", Float(minimum=0.0, maximum=100.0),
              "Below this percent of healthy hosts Envoy spreads over all hosts; 0 disables.",
              default=50.0),
    ),
)

RETRY_BUDGET = Obj(
    description="Retries in flight at most budget percent of the requests in flight.",
    fields=(
        Field("percent", Float(exclusive_minimum=0.0, maximum=100.0),
              "Percent of active requests.", default=20.0),
        Field("minConcurrency", Int(minimum=1, maximum=10_000),
              "Retries allowed in flight whatever the percent.", default=3),
    ),
)

RETRIES = Obj(
    description="Retries only before any response byte (the generation never reached the "
    "client), bounded by a retry budget; another pod is tried ({} for the defaults).",
    fields=(
        Field("retryOn", List(Str(enum=RETRY_CONDITIONS), min_items=1),
              "Conditions, Envoy's names.", default=["connect-failure", "refused-stream",
                                                     "reset"]),
        Field("attempts", Int(minimum=1, maximum=10), "Retries per request.", default=2),
        Field("budget", RETRY_BUDGET, "Retry budget."),
    ),
)


def offline_shape(header: Str, listener: Obj) -> Obj:
    """The offline class, over the header-name and listener shapes of ``shapes``."""
    header_shape = Obj(
        description="Requests whose header has this exact value are batch requests.",
        fields=(
            Field("name", header, "Header name.", default="x-priority"),
            Field("value", Str(pattern=r"^[\x21-\x7e]([\x20-\x7e]{0,254}[\x21-\x7e])?$",
                               hint="printable ASCII"), "Header value.", default="batch"),
        ),
    )

    return Obj(
        description="The offline (batch) class: batch requests reach the same pods under a "
        "concurrency cap that Sluice sizes from the fleet's spare capacity; above it they get "
        "503 with Retry-After ({} for the defaults).",
        fields=(
            Field("header", header_shape, "How batch requests are marked (default "
                  "x-priority: batch, unless only a listener is given)."),
            Field("listener", listener, "A listener of their own for batch requests."),
            Field("concurrencyPerPod", Int(minimum=1, maximum=10_000),
                  "Requests a capacity-1 pod holds comfortably (online plus batch); batch gets "
                  "what online leaves.", default=8),
            Field("maxConcurrency", Int(minimum=0, maximum=1_000_000),
                  "Upper bound of the batch cap over the whole fleet."),
            Field("retryAfter", Duration(), "Retry-After of a refused batch request.",
                  default="5s"),
            Field("interval", Duration(), "How often the cap is resized.", default="2s"),
        ),
    )
