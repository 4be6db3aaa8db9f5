"""What ``GET /api/v1/proxies`` says about each xDS stream, and NACK notices.

Pure functions over stream views, shared by the process that answers the
admin API and by xDS worker processes (``controlplane.worker``), which compute
the rows of their own streams and send them to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xds.protocol import Nack, TypeStatus
from xds.server import ProxyInfo


def short_type(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def proxy_row(info: ProxyInfo, worker: int = 0) -> dict[str, Any]:
    types = [_type_row(s) for s in info.status()]
    return {
        "id": info.node_id,
        "cluster": info.node_cluster,
        "userAgent": info.user_agent,
        "variant": info.variant,
        "stream": info.stream_id,
        "worker": worker,
        "connectedAt": info.connected_at,
        "synced": all(t["status"] == "SYNCED" for t in types),
        "types": types,
    }


@dataclass(frozen=True)
class ProxyFilter:
    """Which rows ``GET /api/v1/proxies`` returns: its query parameters ``node``
    (repeatable, exact node ids), ``cluster``, ``synced`` and ``limit`` (rows after
    sorting; the answer's ``total`` counts every match)."""

    nodes: frozenset[str] = frozenset()
    cluster: str | None = None
    synced: bool | None = None
    limit: int | None = None

    def admits(self, info: ProxyInfo) -> bool:
        """Whether the stream can match (decided before its status is computed)."""
        return ((not self.nodes or info.node_id in self.nodes)
                and (self.cluster is None or info.node_cluster == self.cluster))

    def keeps(self, row: dict[str, Any]) -> bool:
        return self.synced is None or row["synced"] is self.synced


FILTER_PARAMS = ("node", "cluster", "synced", "limit")
MAX_LIMIT = 100_000


def parse_filter(query: Mapping[str, str], nodes: Sequence[str]) -> ProxyFilter:
    """``query``: the request's parameters (one value each), ``nodes``: every ``node``
    value. Raises ValueError naming the parameter and what is wrong with it."""
    unknown = sorted(set(query) - set(FILTER_PARAMS))
    if unknown:
        raise ValueError(f"unknown query parameter {unknown[0]!r}; known: "
                         f"{', '.join(FILTER_PARAMS)}")
    synced = query.get("synced")
    if synced is not None and synced not in ("true", "false"):
        raise ValueError(f"synced: expected true or false, got {synced!r}")
    limit = query.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit()
                                  and 1 <= int(limit) <= MAX_LIMIT):
        raise ValueError(f"limit: expected an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return ProxyFilter(frozenset(nodes), query.get("cluster"),
                       None if synced is None else synced == "true",
                       None if limit is None else int(limit))


def proxy_rows(infos: Iterable[ProxyInfo], worker: int = 0,
               only: ProxyFilter | None = None) -> list[dict[str, Any]]:
    """Rows of the streams ``only`` keeps (every stream without it; never limited here:
    the limit applies to every process's rows together)."""
    if only is None:
        return [proxy_row(info, worker) for info in infos]
    rows = (proxy_row(info, worker) for info in infos if only.admits(info))
    return [row for row in rows if only.keeps(row)]


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["id"], r["stream"]))


def _type_row(s: TypeStatus) -> dict[str, Any]:
    return {
        "typeUrl": s.type_url,
        "type": short_type(s.type_url),
        "versionSent": s.version_sent,
        "versionAcked": s.version_acked,
        "status": s.state.value,
        "lastNack": s.last_nack.message if s.last_nack else None,
        "lastNackVersion": s.last_nack.version if s.last_nack else None,
    }


NackNotice = tuple[str, str, Nack]  # (node id, type URL, the NACK)


def new_nacks(infos: Iterable[ProxyInfo], type_url: str,
              seen: set[tuple[str, str]]) -> list[NackNotice]:
    """NACKs of ``type_url`` not told yet: once per proxy and rejected version
    (``seen`` remembers them)."""
    out: list[NackNotice] = []
    for info in infos:
        for status in info.status():
            nack = status.last_nack
            if nack is None or status.type_url != type_url:
                continue
            key = (info.node_id, nack.version)
            if key not in seen:
                seen.add(key)
                out.append((info.node_id, type_url, nack))
    return out
