"""Per-version counters from a Prometheus server, through ``prometheus-api-client``.

The metrics source ``{prometheus: {url, timeout, podSelector}}``. One read
runs the instant queries of ``promql.plan`` at the same instant and builds
the Reading with ``promql.assemble`` (what is queried and why: there).

Time: Prometheus stamps samples with wall-clock time, so for this provider
the loop passes *Unix seconds* as ``t`` and every query of the read is
evaluated at ``time=t``. Each series then answers its last scrape at or
before ``t``; the next read does the same, and the difference of the two is
exact (no ``increase()``, which extrapolates to the window's edges). A read
at ``t`` sees what was scraped by ``t``: counts lag the traffic by up to one
scrape interval, and both versions lag alike.

``prometheus-api-client`` is synchronous (``requests``): its calls run in
worker threads (``asyncio.to_thread``), each thread with its own client, with
no retries (the next look is the retry) and ``timeout_s`` per query.
Unreachable, timed out, an HTTP error, a malformed or an empty required
answer: :class:`ProviderError` (NODATA).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from analysis.providers import ProviderError, Reading, Target
from analysis.providers.envoy_text import excerpt
from analysis.providers.prom_answers import assemble
from analysis.providers.promql import DEFAULT_POD_SELECTOR, Query, plan

__all__ = ["PrometheusProvider"]


class PrometheusProvider:
    """``read(target, t)`` with ``t`` in Unix seconds (wall clock), see the module doc."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        pod_selector: str = DEFAULT_POD_SELECTOR,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.pod_selector = pod_selector
        self.name = f"prometheus {self.url}"
        self._local = threading.local()
        self._clients: list[PrometheusConnect] = []
        self._lock = threading.Lock()

    def _client(self) -> PrometheusConnect:
        client: PrometheusConnect | None = getattr(self._local, "client", None)
        if client is None:
            client = PrometheusConnect(
                url=self.url, retry=Retry(total=0, read=False), timeout=self.timeout_s
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _query_sync(self, promql: str, t: float) -> Any:
        try:
            return self._client().custom_query(
                promql, params={"time": f"{t:.3f}"}, timeout=self.timeout_s
            )
        except requests.Timeout:
            raise ProviderError(
                f"{self.name}: timed out after {self.timeout_s:g}s on {excerpt(promql)}"
            ) from None
        # Not the JSON of the query API (RecursionError: nested too deeply to decode).
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ProviderError(
                f"{self.name}: malformed answer ({type(exc).__name__}) for {excerpt(promql)}"
            ) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise ProviderError(
                f"{self.name}: {type(exc).__name__} {excerpt(str(exc), 80)}"
            ) from None
        except PrometheusApiClientException as exc:
            raise ProviderError(
                f"{self.name}: {excerpt(str(exc), 120)} for {excerpt(promql)}"
            ) from None

    async def query(self, promql: str, t: float) -> Any:
        """One instant query at ``t`` (Unix seconds); its ``result`` list."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._query_sync, promql, t), self.timeout_s + 1.0
            )
        except TimeoutError:
            raise ProviderError(f"{self.name}: no answer within {self.timeout_s:g}s") from None

    async def read(self, target: Target, t: float) -> Reading:
        queries: tuple[Query, ...] = plan(target, self.pod_selector)
        answers = await asyncio.gather(*(self.query(q.promql, t) for q in queries))
        return assemble(target, t, queries, answers)

    async def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
