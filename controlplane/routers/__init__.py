"""Routers: where an experiment's traffic takes effect (DESIGN §7).

One small protocol, one implementation per file: ``xds`` (Sluice's own ADS,
the default), ``gateway_api`` (an HTTPRoute's backendRefs weights, for any
Gateway API implementation) and ``istio`` (a VirtualService's route weights and
a DestinationRule's subsets). The runner calls ``apply`` where it used to set
the store's override, and ``in_effect`` where it waited for the proxies' ACKs;
the analysis and the state machine do not change.

Every router puts the traffic in the store first (the API, status and Sluice's
own xDS show it); the external ones then write it to their objects (leader
only) and count it in effect once the write succeeded (and, for Gateway API,
once the route's status shows it accepted, when it carries one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from controlplane.rollout.sync import ProxyView, SyncReport
from controlplane.store import Store, TrafficOverride


class Router(Protocol):
    name: str  # xds | gatewayAPI | istio

    def apply(self, service: str, override: TrafficOverride) -> int:
        """Puts ``override`` in force; returns the token ``in_effect`` takes."""
        ...

    def in_effect(self, service: str, versions: Iterable[str], token: int) -> SyncReport:
        """Whether the traffic of ``apply``'s token is in force everywhere it must be."""
        ...


def routers_for(store: Store, proxies: ProxyView,
                external: Mapping[str, Router]) -> Callable[[str], Router]:
    """The router of a service, by its ``spec.router`` (xds when absent or unavailable)."""
    from controlplane.routers.xds import XdsRouter

    xds = XdsRouter(store, proxies)

    def pick(service: str) -> Router:
        try:
            spec = store.declared.service(service).router
        except KeyError:
            return xds
        return external.get(spec.kind, xds) if spec is not None else xds

    return pick
