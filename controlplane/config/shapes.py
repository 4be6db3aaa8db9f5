"""The shapes of Sluice documents: the one source for the checker, the JSON Schema and CONFIG.md."""

from __future__ import annotations

import ipaddress
import re

from controlplane.config.errors import excerpt
from controlplane.config.fields import (
    Bool,
    Duration,
    Either,
    Field,
    Float,
    Int,
    List,
    Map,
    Obj,
    Str,
)
from controlplane.config.routing_shapes import (
    FAILOVER,
    LOAD_REPORT,
    RESPONSE_TIME,
    RETRIES,
    offline_shape,
)
from controlplane.model import EndpointHealth, LbPolicy

# DNS-1123 label: what Kubernetes accepts as a name, and safe in Envoy resource names.
NAME = Str(
    pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    hint="a DNS-1123 label: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit, at most 63 characters",
)
# Kubernetes label and annotation keys: an optional DNS prefix and a name.
QUALIFIED_KEY = Str(
    pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    hint="a label key: an optional DNS prefix and '/', then at most 63 letters, digits, "
    "'-', '_' or '.', starting and ending with a letter or digit",
)
LABEL_VALUE = Str(
    pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$",
    hint="a label value: at most 63 letters, digits, '-', '_' or '.', starting and "
    "ending with a letter or digit",
)
LABELS = Map(keys=QUALIFIED_KEY, values=LABEL_VALUE)
ANNOTATIONS = Map(keys=QUALIFIED_KEY, values=Str())

_DNS_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")


def check_listen_ip(text: str) -> str | None:
    """An IPv4 or IPv6 literal: a listener binds to an IP, not a name."""
    message = check_ip(text)
    if message is not None and check_host(text) is None:
        return f"must be an IPv4 or IPv6 address: a listener binds to an IP, not a DNS name " \
            f"(got {excerpt(text)})"
    return message


def check_ip(text: str) -> str | None:
    if text.startswith("["):
        return f"write IPv6 addresses without brackets (got {excerpt(text)})"
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return f"must be an IPv4 or IPv6 address (got {excerpt(text)})"
    if "%" in text:
        return f"IPv6 zone indexes are not supported (got {excerpt(text)})"
    return None


def check_host(text: str) -> str | None:
    """An IPv4 or IPv6 literal, or a DNS name."""
    if text.startswith("[") or ":" in text or re.fullmatch(r"[0-9.]+", text):
        return check_ip(text)
    labels = text.removesuffix(".").split(".")
    if (
        len(text) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    ):
        return None
    return f"must be an IPv4 or IPv6 address or a DNS name (got {excerpt(text)})"


IP = Str(pattern=r"^[0-9A-Fa-f.:]{2,45}$", check=check_listen_ip,
         hint="an IPv4 or IPv6 address (a listener binds to an IP, not a DNS name)")
HOST = Str(pattern=r"^[0-9A-Za-z.:-]{1,253}$", check=check_host,
           hint="an IPv4 or IPv6 address or a DNS name")


def check_endpoint_ip(text: str) -> str | None:
    """Endpoints travel over EDS, which carries socket addresses: Envoy rejects
    a DNS name there (the whole update would be NACKed), so refuse it here."""
    message = check_ip(text)
    if message is not None and check_host(text) is None:
        return f"must be an IPv4 or IPv6 address: endpoints are sent over EDS, which " \
            f"takes IP addresses, not DNS names (got {excerpt(text)})"
    return message


ENDPOINT_IP = Str(pattern=r"^[0-9A-Fa-f.:]{2,45}$", check=check_endpoint_ip,
                  hint="an IPv4 or IPv6 address (EDS carries IP addresses, not DNS names)")
PORT = Int(minimum=1, maximum=65535)
HEADER = Str(
    pattern=r"^:?[a-z0-9!#$%&'*+.^_`|~-]{1,256}$",
    hint="a lowercase HTTP header name",
)
COOKIE_NAME = Str(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}$", hint="a cookie name")
URL_PATH = Str(pattern=r"^/[^\s?#]*$", hint="a URL path starting with '/'")
UINT32 = Int(minimum=0, maximum=4_294_967_295)

HASHING_POLICIES = tuple(p.value for p in LbPolicy if p.takes_hash_key)
NON_HASHING_POLICIES = tuple(p.value for p in LbPolicy if not p.takes_hash_key)
LEAST_REQUEST_POLICIES = tuple(p.value for p in LbPolicy if p.is_least_request)
SLOW_START_POLICIES = (LbPolicy.ROUND_ROBIN.value, *LEAST_REQUEST_POLICIES)

METADATA = Obj(
    description="Kubernetes-style object metadata.",
    fields=(
        Field("name", NAME, "Object name (DNS-1123 label), unique per kind.", required=True),
        Field("namespace", NAME, "Namespace of a custom resource (kubectl apply); names stay "
              "unique per kind across namespaces."),
        Field("labels", LABELS, "Free key/value labels (not used for routing)."),
        Field("annotations", ANNOTATIONS, "Free key/value annotations."),
    ),
)

ENDPOINT = Obj(
    description="One static backend (a model server replica).",
    fields=(
        Field("address", ENDPOINT_IP, "IPv4/IPv6 address of the replica (EDS takes no DNS names).",
              required=True),
        Field("port", PORT, "TCP port, 1-65535.", required=True),
        Field("weight", Int(minimum=1, maximum=1_000_000),
              "Load-balancing weight within the version (e.g. GPU capacity).", default=1),
        Field("labels", LABELS, "Free labels (e.g. gpu: h100)."),
        Field("health", Str(enum=tuple(h.value for h in EndpointHealth)),
              "Health asserted to Envoy; 'draining' takes no new requests, 'unknown' lets "
              "active health checks decide.", default=EndpointHealth.UNKNOWN.value),
        Field("priority", Int(minimum=0, maximum=127),
              "Failover order: priority 0 takes the traffic while it is healthy enough, "
              "then 1, and so on (e.g. an A100 or spot pool behind the H100 pool).",
              default=0),
    ),
)

# A port of a Service or container: a number, or its name (an IANA service name).
PORT_OR_NAME = Either((PORT, Str(pattern=r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$",
                                 hint="a port name: at most 15 lowercase letters, digits "
                                 "and '-'")), hint="a port number or a port name")
SUBDOMAIN = Str(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
                hint="a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'")

KUBE_ENDPOINTS = Obj(
    description="A version's endpoints from Kubernetes (sluice serve --kubernetes): ready "
    "endpoints serve, terminating ones drain, the rest are left out; pods that join ramp up "
    "with slow start (slowStart, or 30s when it is not set and the policy allows it).",
    one_of=("service", "selector"),
    fields=(
        Field("namespace", NAME, "Namespace (default: the ModelService's own; for files, "
              "Sluice's --namespace)."),
        Field("service", NAME, "The EndpointSlices of this Service."),
        Field("selector", LABELS, "Or the pods that carry all these labels."),
        Field("port", PORT_OR_NAME, "Port number, or the name of a port of the Service "
              "(EndpointSlices) or of the pods' containers.", required=True),
    ),
)

GATEWAY_API_ROUTER = Obj(
    description="Gateway API: the weights of an HTTPRoute's backendRefs.",
    fields=(
        Field("httpRoute", SUBDOMAIN, "The HTTPRoute's name.", required=True),
        Field("namespace", NAME, "Its namespace (default: the ModelService's own)."),
        Field("backends", Map(keys=NAME, values=NAME),
              "The backend Service of each version, e.g. {v1: chat-v1, v2: chat-v2}.",
              required=True),
        Field("port", PORT, "Port of the backendRefs Sluice adds (a version not yet in the "
              "route)."),
    ),
)

ISTIO_ROUTER = Obj(
    description="Istio: a VirtualService's route weights and a DestinationRule's subsets.",
    fields=(
        Field("virtualService", SUBDOMAIN, "The VirtualService's name.", required=True),
        Field("host", HOST, "The destination host (e.g. chat.models.svc.cluster.local).",
              required=True),
        Field("destinationRule", SUBDOMAIN, "The DestinationRule that gets one subset per "
              "version (absent: its subsets are managed elsewhere)."),
        Field("namespace", NAME, "Their namespace (default: the ModelService's own)."),
        Field("subsets", Map(keys=NAME, values=NAME),
              "Subset name per version (default: the version's name)."),
        Field("subsetLabel", QUALIFIED_KEY, "The pod label a subset selects on; its value "
              "is the version's name.", default="version"),
    ),
)

ROUTER = Obj(
    description="The traffic layer experiments move: xds (Sluice's own ADS, the default), "
    "gatewayAPI or istio.",
    one_of=("xds", "gatewayAPI", "istio"),
    fields=(
        Field("xds", Obj(fields=(), description="Sluice's own xDS ({})."), "Sluice's ADS."),
        Field("gatewayAPI", GATEWAY_API_ROUTER, GATEWAY_API_ROUTER.description),
        Field("istio", ISTIO_ROUTER, ISTIO_ROUTER.description),
    ),
)

VERSION = Obj(
    description="One model version: an Envoy cluster named <service>/<version>.",
    fields=(
        Field("name", NAME, "Version name (DNS-1123 label), unique in the service.",
              required=True),
        Field("weight", Int(minimum=0, maximum=100),
              "Percent of the service's traffic; the versions add up to 100; 0 gets none.",
              required=True),
        Field("endpoints", Either((List(ENDPOINT, min_items=1), Obj(
            description="Endpoints discovered in Kubernetes.",
            fields=(Field("kubernetes", KUBE_ENDPOINTS, KUBE_ENDPOINTS.description,
                          required=True),))),
            hint="a list of endpoints or a mapping with kubernetes"),
              "Static endpoints (address:port unique within the version), or "
              "{kubernetes: {...}} to discover them.", required=True),
    ),
)

COOKIE = Obj(
    description="Hash on a cookie; Envoy sets it when missing and ttl > 0.",
    fields=(
        Field("name", COOKIE_NAME, "Cookie name.", required=True),
        Field("ttl", Duration(positive=False),
              "Lifetime of a generated cookie; 0s: never generate one.", default="0s"),
        Field("path", URL_PATH, "Path attribute of a generated cookie.", default="/"),
    ),
)

HASH_KEY = Obj(
    description="What a request is hashed on; exactly one of header, cookie, sourceIp.",
    one_of=("header", "cookie", "sourceIp"),
    fields=(
        Field("header", HEADER, "Hash on this request header (e.g. x-session-id)."),
        Field("cookie", COOKIE, "Hash on a cookie."),
        Field("sourceIp", Bool(const=True, hint="remove it, or hash on a header or cookie"),
              "Hash on the client's IP address (must be true when given)."),
    ),
)

LOAD_BALANCING = Obj(
    description="How Envoy picks an endpoint within a version.",
    fields=(
        Field("policy", Str(enum=tuple(p.value for p in LbPolicy)),
              "ring_hash and maglev need hashKey (hybrid: x-session-id unless set); "
              "response_time weights endpoints "
              "by measured response time and load; load_report by the pods' ORCA reports.",
              default=LbPolicy.LEAST_REQUEST.value),
        Field("hashKey", HASH_KEY,
              "Required with ring_hash or maglev; hybrid: a header, {header: x-session-id} "
              "unless set; invalid otherwise."),
        Field("boundedLoad", Float(exclusive_minimum=1.0, maximum=1000.0),
              "Cap a host at this factor of the mean load (e.g. 1.25); ring_hash, maglev or "
              "hybrid only (hybrid: 1.25 by default)."),
        Field("activeRequestBias", Float(minimum=0.0, maximum=10.0),
              "Least request: weight / (active + 1) ^ bias; 0 is weighted round robin. "
              "least_request, response_time and hybrid only.", default=1.0),
        Field("capacity", Map(keys=LABEL_VALUE, values=Float(exclusive_minimum=0.0,
                                                             maximum=1000.0)),
              "Relative capacity per value of the endpoints' capacityLabel, e.g. "
              "{h100: 2, a100: 1}: multiplies each endpoint's weight."),
        Field("capacityLabel", QUALIFIED_KEY,
              "The endpoint label capacity is keyed on (gpu when absent)."),
        Field("responseTime", RESPONSE_TIME, "Tuning of policy response_time."),
        Field("loadReport", LOAD_REPORT, "Tuning of policy load_report."),
    ),
    schema_extra={
        "anyOf": [
            {"required": ["policy", "hashKey"],
             "properties": {"policy": {"enum": [p for p in HASHING_POLICIES
                                                if p != LbPolicy.HYBRID.value]}}},
            {"required": ["policy"], "properties": {"policy": {"const": LbPolicy.HYBRID.value}}},
            {"properties": {"policy": {"enum": list(NON_HASHING_POLICIES)}},
             "not": {"anyOf": [{"required": ["hashKey"]}, {"required": ["boundedLoad"]}]}},
        ]
    },
)

HEALTH_CHECK = Obj(
    description="Active HTTP health checks by Envoy ({} for the defaults).",
    fields=(
        Field("path", URL_PATH, "Path to GET.", default="/health"),
        Field("interval", Duration(), "Time between checks.", default="2s"),
        Field("timeout", Duration(), "Time to wait for an answer.", default="2s"),
        Field("healthyThreshold", Int(minimum=1, maximum=1000),
              "Successes before a host is healthy.", default=2),
        Field("unhealthyThreshold", Int(minimum=1, maximum=1000),
              "Failures before a host is unhealthy.", default=3),
    ),
)

OUTLIER_DETECTION = Obj(
    description="Passive ejection of failing endpoints ({} for the defaults).",
    fields=(
        Field("consecutive5xx", Int(minimum=1, maximum=1000),
              "Consecutive 5xx answers that eject a host.", default=5),
        Field("interval", Duration(), "Time between ejection sweeps.", default="10s"),
        Field("baseEjectionTime", Duration(),
              "Ejection time, multiplied by the number of ejections.", default="30s"),
        Field("maxEjectionPercent", Int(minimum=0, maximum=100),
              "At most this percent of a version's hosts ejected.", default=50),
    ),
)

SLOW_START = Obj(
    description="Ramp up traffic to new endpoints; round_robin or least_request only.",
    fields=(
        Field("window", Duration(), "Length of the ramp.", required=True),
        Field("aggression", Float(exclusive_minimum=0.0, maximum=100.0),
              "Ramp shape; 1.0 is linear.", default=1.0),
        Field("minWeightPercent", Float(minimum=0.0, maximum=100.0),
              "Weight at the start of the ramp, in percent.", default=10.0),
    ),
)

CIRCUIT_BREAKERS = Obj(
    description="Per-version limits Envoy enforces ({} for the defaults).",
    fields=(
        Field("maxConnections", UINT32, "Connections to the version.", default=10_000),
        Field("maxPendingRequests", UINT32, "Requests waiting for a connection.",
              default=10_000),
        Field("maxRequests", UINT32, "Requests in flight.", default=10_000),
        Field("maxRetries", UINT32, "Retries in flight.", default=3),
    ),
)

TIMEOUTS = Obj(
    description="Route timeouts; LLM responses stream for minutes ({} for the defaults).",
    fields=(
        Field("request", Duration(positive=False),
              "Whole-request timeout; 0s disables it.", default="10m"),
        Field("idle", Duration(positive=False),
              "Stream idle timeout; 0s disables it.", default="5m"),
    ),
)

LISTENER = Obj(
    description="Where Envoy accepts this service's traffic.",
    fields=(
        Field("address", IP, "IP address to bind (not a DNS name).", required=True),
        Field("port", PORT, "TCP port, 1-65535.", required=True),
    ),
)

OFFLINE = offline_shape(HEADER, LISTENER)

MODEL_SERVICE_SPEC = Obj(
    description="A model service: a listener and the versions it splits traffic between.",
    fields=(
        Field("listener", LISTENER, "Listener address and port; unique across services.",
              required=True),
        Field("versions", List(VERSION, min_items=1),
              "Model versions; names unique, weights add up to 100.", required=True),
        Field("loadBalancing", LOAD_BALANCING, "Endpoint selection within a version."),
        Field("healthCheck", HEALTH_CHECK, "Active health checks; absent: none."),
        Field("outlierDetection", OUTLIER_DETECTION, "Outlier ejection; absent: none."),
        Field("slowStart", SLOW_START, "Slow start for new endpoints; absent: none."),
        Field("circuitBreakers", CIRCUIT_BREAKERS, "Circuit breaker thresholds."),
        Field("timeouts", TIMEOUTS, "Route timeouts."),
        Field("failover", FAILOVER, "Priority failover and panic threshold."),
        Field("retries", RETRIES, "Safe retries; absent: none."),
        Field("offline", OFFLINE, "The batch class; absent: none."),
        Field("router", ROUTER, "Where experiments set the weights (default: xds)."),
    ),
    schema_extra={
        "not": {
            "required": ["slowStart", "loadBalancing"],
            "properties": {
                "loadBalancing": {
                    "required": ["policy"],
                    "properties": {"policy": {"enum": [
                        p.value for p in LbPolicy if p.value not in SLOW_START_POLICIES
                    ]}},
                }
            },
        }
    },
)
