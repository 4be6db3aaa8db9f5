"""What the primary process and its xDS worker processes tell each other.

``sluice serve --workers N`` runs N processes that accept xDS streams on one
port (SO_REUSEPORT: the kernel spreads connections over their sockets). The
primary owns everything else: configuration, snapshots, experiments, routing,
the admin API. It ships each snapshot's serialized resources to the workers,
so every process serves byte-identical resources under the same content-hash
versions; the workers report their streams back, so the admin API and the
rollouts see one fleet.

Messages travel over a Unix socket pair as length-prefixed pickles. Both ends
are this program, started together; nothing else can reach the socket.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

from controlplane.gcpolicy import FullCollections
from controlplane.model import ModelService
from controlplane.proxy_rows import ProxyFilter
from xds.limits import StreamLimits
from xds.lrs import ClusterLoad
from xds.protocol import Nack
from xds.snapshot import Resource
from xds.tls import TlsFiles

_LENGTH = struct.Struct("!I")
MAX_MESSAGE_BYTES = 1 << 30

# ---------------------------------------------------------------- primary -> worker


@dataclass(frozen=True)
class WorkerConfig:
    index: int  # 1..count-1; the primary serves as index 0
    count: int
    address: str  # HOST:PORT the primary bound (never port 0)
    tls: TlsFiles | None
    limits: StreamLimits
    lrs_interval_s: float
    report_interval_s: float = 0.1
    full_collections: FullCollections | None = None  # as the primary's (ServeOptions)


@dataclass(frozen=True)
class ShipSnapshot:
    """A snapshot: every resource by (name, version), and the bytes of those the
    worker does not have yet (the previous snapshot's are reused)."""

    version: str
    changed_at: float | None  # time.monotonic() of the change; one clock per host
    names: dict[str, tuple[tuple[str, str], ...]]  # type URL -> ((name, version), ...)
    new: tuple[Resource, ...]


@dataclass(frozen=True)
class SyncQueries:
    """Services whose sync state (``controlplane.rollout.sync``) to report each tick."""

    queries: frozenset[tuple[str, tuple[str, ...]]]  # (service, versions)


@dataclass(frozen=True)
class Query:
    """A question answered once: ``proxies`` (rows of /api/v1/proxies) or
    ``consistency`` (proxy rows of one service's consistency view)."""

    id: int
    kind: str
    service: ModelService | None = None
    proxy_filter: ProxyFilter | None = None  # for ``proxies``


# ---------------------------------------------------------------- worker -> primary


@dataclass(frozen=True)
class StreamEntry:
    stream_id: int
    node_id: str
    node_cluster: str
    user_agent: str
    variant: str
    connected_at: float
    admin_url: str | None


@dataclass(frozen=True)
class SyncAnswer:
    service: str
    versions: tuple[str, ...]
    snapshot_version: str
    proxies: tuple[str, ...]
    pending: tuple[str, ...]
    nacked: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Report:
    """What happened on one worker since its last report."""

    index: int
    pid: int
    active_streams: int
    snapshot_version: str
    joined: tuple[StreamEntry, ...] = ()
    left: tuple[int, ...] = ()
    counts: tuple[tuple[str, str, str, int], ...] = ()  # (event, type URL, variant, n)
    stream_errors: tuple[tuple[str, int], ...] = ()
    converged: tuple[float, ...] = ()
    nacks: tuple[tuple[str, str, Nack], ...] = ()  # (node id, type URL, NACK)
    loads: tuple[tuple[str, tuple[ClusterLoad, ...]], ...] = ()  # LRS, per node
    syncs: tuple[SyncAnswer, ...] = ()
    first: bool = False  # the worker's first report: it listens now


@dataclass(frozen=True)
class Answer:
    id: int
    rows: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- framing


async def send(writer: asyncio.StreamWriter, message: object) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(body)) + body)
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> object | None:
    """The next message; None when the other end closed the socket."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE_BYTES:
        raise ValueError(f"worker message of {length} bytes")
    try:
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message: object = pickle.loads(body)
    return message
