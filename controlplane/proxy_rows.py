"""What ``GET /api/v1/proxies`` says about each xDS stream, and NACK notices.

Pure functions over stream views, shared by the process that answers the
admin API and by xDS worker processes (``controlplane.worker``), which compute
the rows of their own streams and send them to it.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def proxy_rows(infos: Iterable[ProxyInfo], worker: int = 0) -> list[dict[str, Any]]:
    return [proxy_row(info, worker) for info in infos]


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
