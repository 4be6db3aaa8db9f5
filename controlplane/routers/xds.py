"""The default router: the store's override, in force once every proxy ACKed it."""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.rollout.sync import ProxyView, SyncReport
from controlplane.store import Store, TrafficOverride


class XdsRouter:
    name = "xds"

    def __init__(self, store: Store, proxies: ProxyView) -> None:
        self.store = store
        self.proxies = proxies

    def apply(self, service: str, override: TrafficOverride) -> int:
        self.store.set_override(service, override)
        return self.store.revision

    def in_effect(self, service: str, versions: Iterable[str], token: int) -> SyncReport:
        return self.proxies.sync(service, versions, token)
