"""The shape of an ``Experiment`` document: one source for the checker, the schema and the docs.

Rules that span fields (which sections go with which strategy, units that
depend on a metric's kind, references to metric names) live in
``controlplane.config.experiment``; references to other documents (the
service and its versions) are checked when documents are assembled.
"""

from __future__ import annotations

from controlplane.config.fields import (
    Bool,
    Duration,
    Either,
    Field,
    Float,
    Int,
    List,
    Obj,
    Str,
    Time,
)
from controlplane.config.shapes import HEADER, NAME
from controlplane.experiment import OnStall, Strategy

METRIC_KINDS = ("error_rate", "latency", "slow_rate", "mean", "ratio")
TIME_KINDS = ("latency",)  # whose minEffect and guard thresholds are durations
DIRECTED_KINDS = ("mean", "ratio")  # that may set direction

METRIC_NAME = Str(
    pattern=r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$",
    hint="lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or "
    "digit, at most 63 characters",
)
URL = Str(pattern=r"^https?://[^\s/?#]+(/[^\s]*)?$", hint="an http:// or https:// URL",
          max_length=2048)
PROMQL = Str(pattern=r"^[\s\S]*\S[\s\S]*$", hint="a PromQL expression", max_length=4096)
PERCENT = Float(exclusive_minimum=0.0, maximum=100.0)
NUMBER_OR_TIME = Either((Float(minimum=0.0), Time()), "a number or a duration like '20ms'")

METRIC = Obj(
    description="One metric judged at every look (candidate against baseline).",
    fields=(
        Field("name", METRIC_NAME, "Metric name, unique in the experiment.", required=True),
        Field("kind", Str(enum=METRIC_KINDS),
              "error_rate: errors per request; latency: a quantile of a histogram; "
              "slow_rate: the share of requests slower than threshold (exact with any "
              "buckets); mean: a sum/count mean; ratio: a ratio of two per-request sums "
              "(tokens per second, TTFT per prompt token).", required=True),
        Field("harmMargin", Float(minimum=0.0),
              "Relative: 0.1 = 10 % worse is harm; evidence beyond it rolls back.",
              required=True),
        Field("nonInferiorityMargin", Float(minimum=0.0),
              "Relative: advance only when the interval shows the candidate within it.",
              required=True),
        Field("minSamples", Int(minimum=0, maximum=10**12),
              "Requests (observations) per version before the metric may pass.", default=0),
        Field("gating", Bool(), "false: reported only, never decides.", default=True),
        Field("minEffect", NUMBER_OR_TIME,
              "Absolute floor under which differences count as equal: a rate (0.005) for "
              "error_rate and slow_rate, a duration (20ms) for latency, the metric's own "
              "unit for mean and ratio.", default=0),
        Field("quantile", Float(exclusive_minimum=0.0, maximum=0.9999),
              "latency only: the quantile judged (0.95 = p95).", default=0.95),
        Field("threshold", Time(positive=True),
              "slow_rate only (required there): requests slower than this are slow. It must "
              "be a bucket bound of the source histogram (e.g. 500ms or 1s on Envoy's "
              "upstream_rq_time, which are bounds of both Envoy's default buckets and those "
              "sluice bootstrap sets)."),
        Field("numerator", METRIC_NAME,
              "ratio only: the mean (sum/count series) whose sums are the numerator, e.g. "
              "output_tokens; goes with denominator. Without both, the ratio is read from "
              "the samples' ratios under source."),
        Field("denominator", METRIC_NAME,
              "ratio only: the mean whose sums are the denominator, e.g. e2e (seconds)."),
        Field("direction", Str(enum=("higherIsWorse", "lowerIsWorse")),
              "mean and ratio only: which way is harm.", default="higherIsWorse"),
        Field("source", METRIC_NAME,
              "Which series: an error class, a histogram (latency, ttft, itl, e2e) for "
              "latency and slow_rate, a mean's or a ratio's name; default: all errors, the "
              "latency histogram, or the metric's name."),
        Field("query", PROMQL,
              "Prometheus only: your own query for this metric's per-window count, with "
              "{{service}}, {{version}} and {{interval}} placeholders."),
        Field("primary", Bool(),
              "abtest: a primary metric; the test's winner is the arm that is superior on "
              "every primary metric.", default=False),
    ),
    schema_extra={
        "allOf": [
            {"anyOf": [
                {"properties": {"kind": {"enum": ["slow_rate"]}}, "required": ["threshold"]},
                {"properties": {"kind": {"enum": [k for k in METRIC_KINDS
                                                  if k != "slow_rate"]}},
                 "not": {"required": ["threshold"]}},
            ]},
            {"anyOf": [
                {"properties": {"kind": {"enum": ["ratio"]}},
                 "not": {"anyOf": [{"required": ["numerator", "source"]},
                                   {"required": ["denominator", "source"]}]}},
                {"not": {"anyOf": [{"required": ["numerator"]},
                                   {"required": ["denominator"]}]}},
            ]},
            {"anyOf": [
                {"required": ["numerator", "denominator"]},
                {"not": {"anyOf": [{"required": ["numerator"]},
                                   {"required": ["denominator"]}]}},
            ]},
        ]
    },
)

STEP = Obj(
    description="A canary step: the candidate's traffic percent and how long to stay at least.",
    fields=(
        Field("weight", PERCENT, "Candidate percent, 0 < weight <= 100.", required=True),
        Field("soak", Duration(positive=False),
              "Minimum time at this step before advancing.", default="0s"),
    ),
)

ENVOY_SOURCE = Obj(
    description="Read per-version stats from Envoys' admin /stats/prometheus.",
    fields=(
        Field("adminUrls", List(URL),
              "Envoy admin base URLs; empty or absent: the admin addresses that connected "
              "proxies announce (sluice bootstrap --admin-address)."),
    ),
)

PROMETHEUS_SOURCE = Obj(
    description="Read per-version series from a Prometheus server.",
    fields=(
        Field("url", URL, "Prometheus base URL.", required=True),
        Field("timeout", Duration(), "Per-query timeout.", default="5s"),
        Field("podSelector", Str(max_length=1024),
              "Label matchers that select one version's pods in pod metrics (vLLM "
              "names), with {{service}} and {{version}} placeholders.",
              default='service="{{service}}",version="{{version}}"'),
    ),
)

METRICS_SOURCE = Obj(
    description="Where metrics come from; absent: the connected Envoys' admin stats.",
    one_of=("envoy", "prometheus"),
    fields=(
        Field("envoy", ENVOY_SOURCE, "Envoy admin stats, summed over proxies."),
        Field("prometheus", PROMETHEUS_SOURCE, "A Prometheus server."),
    ),
)

GUARD = Obj(
    description="Roll back at once when the candidate is grossly worse, before statistics.",
    fields=(
        Field("metric", METRIC_NAME, "A metric of this experiment.", required=True),
        Field("above", NUMBER_OR_TIME,
              "Threshold on the candidate's value in the latest window: a rate for "
              "error_rate and slow_rate (0.5 = half the requests), a duration for latency, "
              "the metric's unit for mean and ratio (below it, when lower is worse).",
              required=True),
        Field("minRequests", Int(minimum=1, maximum=10**9),
              "Candidate requests the window needs before the guard may fire.", default=20),
    ),
)

MATCH = Obj(
    description="A request cohort that goes to the candidate.",
    fields=(
        Field("header", HEADER, "Request header name.", required=True),
        Field("value", Str(pattern=r"^[\x20-\x7e]{1,256}$", hint="printable ASCII"),
              "Exact header value.", required=True),
    ),
)

ABTEST = Obj(
    description="strategy abtest: a fixed split or a cohort, until enough samples; a winner.",
    fields=(
        Field("weight", Float(exclusive_minimum=0.0, maximum=99.0),
              "Candidate percent of traffic (sticky per user when the service has a hash "
              "key: a fixed share of hash keys).", default=50),
        Field("match", MATCH, "A header cohort that goes to the candidate instead of a split."),
        Field("minSamples", Int(minimum=1, maximum=10**12),
              "Requests per arm before the test may end; default: the largest minSamples "
              "of its metrics."),
        Field("maxDuration", Duration(), "End the test after this long at most.",
              default="24h"),
        Field("promoteOnWin", Bool(), "Promote the candidate when it wins.", default=False),
    ),
)

BLUEGREEN = Obj(
    description="strategy bluegreen: mirror, then switch everything, keep the old ready.",
    fields=(
        Field("mirrorPercent", PERCENT,
              "Percent of live requests copied to the candidate (responses discarded).",
              default=100),
        Field("mirrorDuration", Duration(),
              "Minimum time judging the mirrored traffic before the switch.", default="5m"),
        Field("rollbackWindow", Duration(),
              "After the switch, the baseline stays ready (and gets mirrored copies) this "
              "long while analysis runs.", default="10m"),
    ),
)

HTTP_HOOK = Obj(
    description="An HTTP call that updates one pod.",
    fields=(
        Field("url", URL, "URL; {{address}}, {{port}}, {{pod}} and {{version}} are "
              "replaced.", required=True),
        Field("method", Str(enum=("POST", "PUT", "PATCH", "GET")), "HTTP method.",
              default="POST"),
        Field("body", Str(max_length=65536), "Request body (same placeholders)."),
    ),
)

UPDATE_HOOK = Obj(
    description="How one pod is updated to the candidate version.",
    one_of=("command", "http"),
    fields=(
        Field("command", List(Str(max_length=4096), min_items=1),
              "A command (argv) run with SLUICE_POD, SLUICE_ADDRESS, SLUICE_PORT, "
              "SLUICE_VERSION in its environment; exit 0 means done."),
        Field("http", HTTP_HOOK, "An HTTP call; a 2xx answer means done."),
        Field("timeout", Duration(), "How long the hook may take.", default="2m"),
    ),
)

ROLLING = Obj(
    description="strategy rolling: pods change version one batch at a time.",
    fields=(
        Field("updateHook", UPDATE_HOOK, "Updates one pod to the candidate version.",
              required=True),
        Field("maxUnavailable", Int(minimum=1, maximum=1000),
              "Pods drained and updating at once.", default=1),
        Field("drainTimeout", Duration(),
              "Longest wait for a drained pod's in-flight requests to finish.", default="2m"),
        Field("readyTimeout", Duration(),
              "Longest wait for an updated pod to answer healthy as the new version.",
              default="5m"),
        Field("versionHeader", HEADER,
              "Response header in which a pod reports its version.",
              default="x-sluice-version"),
    ),
)

SYNCHRONIZED = Obj(
    description="strategy synchronized: every proxy switches to the candidate together.",
    fields=(
        Field("strict", Bool(),
              "Answer new requests 503 with Retry-After during the switch instead of "
              "mixing versions.", default=False),
        Field("drainTimeout", Duration(),
              "strict: longest wait for the old version's in-flight requests.",
              default="1m"),
        Field("rollbackWindow", Duration(),
              "After the switch, guards and analysis run this long before success.",
              default="5m"),
    ),
)

def _shift(what: str, guard: bool) -> Obj:
    fields = [
        Field("maxStep", Float(exclusive_minimum=0.0, maximum=100.0),
              f"At most this many points of traffic move per interval when the {what} "
              "receiver lacks capacity.", default=25),
        Field("interval", Duration(), "Time between steps of such a ramp.", default="10s"),
        Field("headroom", Float(minimum=0.0, maximum=100.0),
              "The receiver's load per unit of capacity may grow this much (0.25 = 25 %) "
              "before a ramp is needed.", default=0.25),
    ]
    if guard:
        fields.append(Field("immediateOnGuard", Bool(),
                            "A rollback a guard caused goes at once, whatever the capacity.",
                            default=False))
    return Obj(description=f"How a {what} moves traffic: at once when the receiving version "
               "has the capacity (endpoint weights of endpoints that take traffic), else in "
               "steps.", fields=tuple(fields))


WEBHOOK = Obj(
    description="POST a JSON body to a URL on every phase change, rollback and stall.",
    fields=(
        Field("url", URL, "Receiver URL.", required=True),
        Field("secretFile", Str(max_length=4096),
              "File with a shared secret: the body is signed (X-Sluice-Signature: "
              "sha256=HMAC of timestamp.body) and X-Sluice-Timestamp is sent."),
        Field("format", Str(enum=("json", "slack")),
              "json: Sluice's event; slack: a Slack-compatible {text, blocks} message.",
              default="json"),
    ),
)

NOTIFY = Obj(
    description="A notification target.",
    one_of=("webhook",),
    fields=(Field("webhook", WEBHOOK, "A webhook."),),
)

EXPERIMENT_SPEC = Obj(
    description="An experiment: move a service's traffic from baseline to candidate, judged.",
    fields=(
        Field("service", NAME,
              "The ModelService whose traffic moves (required to run; `sluice replay` "
              "does without)."),
        Field("strategy", Str(enum=tuple(s.value for s in Strategy)),
              "canary, abtest, bluegreen, rolling or synchronized.",
              default=Strategy.CANARY.value),
        Field("baseline", NAME, "The version serving today.", required=True),
        Field("candidate", NAME, "The version under test.", required=True),
        Field("steps", List(Either((PERCENT, STEP),
                                   "a percent or a mapping with weight and soak"),
                            min_items=1),
              "canary: candidate percents in increasing order, e.g. [5, 10, 25, 50] or "
              "[{weight: 5, soak: 10m}, ...]."),
        Field("interval", Duration(), "Time between looks.", default="1m"),
        Field("alpha", Float(exclusive_minimum=0.0, maximum=0.49),
              "Error budget of every decision (false rollback, false pass).", default=0.05),
        Field("srmAlpha", Float(exclusive_minimum=0.0, maximum=0.49),
              "Level of the sample-ratio-mismatch check.", default=0.001),
        Field("metrics", List(METRIC, min_items=1), "The metrics judged.", required=True),
        Field("metricsSource", METRICS_SOURCE, "Where metrics come from."),
        Field("guards", List(GUARD), "Gross-failure thresholds that roll back at once."),
        Field("stallBudget", Duration(),
              "How long the experiment may hold for lack of data before onStall.",
              default="30m"),
        Field("onStall", Str(enum=tuple(s.value for s in OnStall)),
              "What happens when the stall budget is spent.", default=OnStall.PAUSE.value),
        Field("pauseBeforePromotion", Bool(),
              "Wait for `sluice promote` instead of promoting on its own.", default=False),
        Field("abtest", ABTEST, "strategy abtest only."),
        Field("bluegreen", BLUEGREEN, "strategy bluegreen only."),
        Field("rolling", ROLLING, "strategy rolling only (required there)."),
        Field("synchronized", SYNCHRONIZED, "strategy synchronized only."),
        Field("rollback", _shift("rollback", True), "Capacity-aware rollbacks."),
        Field("promotion", _shift("promotion", False), "Capacity-aware promotions."),
        Field("notify", List(NOTIFY),
              "Where to send phase changes, rollbacks with their evidence, and stalls "
              "(besides sluice serve --notify-url)."),
    ),
)
