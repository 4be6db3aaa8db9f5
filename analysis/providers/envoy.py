"""Per-version counters straight from each Envoy's admin ``/stats/prometheus``.

The metrics source ``{envoy: {adminUrls: [...]}}``, and the default when none
is set (then the admin addresses come from the connected proxies: see the
``sluice.dev/admin`` node metadata key in ``xds.bootstrap``). Every admin URL
is read concurrently; each one is an *origin* of the reading (its key is the
URL), so ``windows.windows_between`` subtracts per Envoy and sums over them,
and a restarted Envoy shows up as a counter reset instead of a negative count.

An Envoy that does not answer (refused, timeout, not 200, malformed text) is
left out of that reading and logged; its counters rejoin later as a new
baseline. When none answers, or none has stats for a target version's
cluster, ``read`` raises :class:`ProviderError` (NODATA).

Only the target's clusters are asked for (the admin ``filter`` parameter), so
a gateway with many clusters sends a few kilobytes. Histograms are those of
Envoy's last stats flush (``stats_flush_interval``, 1 s in ``sluice
bootstrap``); counters are live.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from analysis.providers import ProviderError, Reading, Target, VersionReading
from analysis.providers.envoy_text import cluster_filter, excerpt, parse_envoy_stats

__all__ = ["EnvoyStatsProvider"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024


class EnvoyStatsProvider:
    """Reads ``/stats/prometheus`` of every Envoy admin URL (a list, or a callable giving one)."""

    name = "envoy"

    def __init__(
        self,
        admin_urls: Callable[[], Sequence[str]] | Sequence[str],
        timeout_s: float = 5.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._admin_urls = admin_urls
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def urls(self) -> list[str]:
        """The admin base URLs to read now, without trailing slashes and duplicates."""
        raw = self._admin_urls() if callable(self._admin_urls) else self._admin_urls
        return list(dict.fromkeys(u.rstrip("/") for u in raw if u))

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    async def _read_one(self, url: str, target: Target) -> dict[str, VersionReading]:
        params = {"filter": cluster_filter(dict(target.clusters))}
        try:
            async with self._http().get(url + "/stats/prometheus", params=params) as r:
                if r.status != 200:
                    body = (await r.read())[:200].decode(errors="replace")
                    raise ProviderError(f"{url}: HTTP {r.status} {excerpt(body)}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in r.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise ProviderError(f"{url}: answer larger than {MAX_BODY_BYTES} bytes")
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(f"{url}: {type(exc).__name__}: {excerpt(str(exc), 80)}") from exc
        try:
            return parse_envoy_stats(b"".join(chunks).decode("utf-8"), target.clusters)
        except UnicodeDecodeError:
            raise ProviderError(f"{url}: answer is not UTF-8 text") from None
        except ProviderError as exc:
            raise ProviderError(f"{url}: {exc}") from None

    async def read(self, target: Target, t: float) -> Reading:
        """Every Envoy's cumulative counters for ``target``'s clusters, stamped ``t``."""
        urls = self.urls()
        if not urls:
            raise ProviderError("no Envoy admin address to read (none given or announced)")
        results = await asyncio.gather(
            *(self._read_one(u, target) for u in urls), return_exceptions=True
        )
        origins: dict[str, Mapping[str, VersionReading]] = {}
        failures: list[str] = []
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, ProviderError):
                log.warning("envoy stats: %s", result)
                failures.append(str(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                origins[url] = result
        if not origins:
            raise ProviderError(f"no Envoy answered ({len(failures)} tried); first: {failures[0]}")
        missing = [v for v in target.versions if not any(v in o for o in origins.values())]
        if missing:
            names = ", ".join(target.clusters.get(v, v) for v in missing)
            raise ProviderError(f"no Envoy has stats for cluster {names}")
        return Reading(t=t, origins=origins)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
