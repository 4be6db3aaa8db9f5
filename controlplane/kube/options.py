"""What ``sluice serve --kubernetes`` takes (light: no client imported here)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

SOURCE = "kubernetes"


@dataclass(frozen=True)
class KubeOptions:
    kubeconfig: str | None = None
    namespace: str | None = None  # Sluice's own: the Lease and the journal (default: the pod's)
    watch_namespace: str | None = None  # the custom resources' (None: every namespace)
    identity: str | None = None  # this replica in the Lease (default: $POD_NAME or host-pid)
    host: str | None = None  # a plain-HTTP API server instead of credentials (kubectl proxy)
    lease_duration_s: float = 10.0
    renew_deadline_s: float = 7.0
    retry_period_s: float = 2.0
    status_interval_s: float = 1.0
    replica_count_interval_s: float = 5.0  # how often this replica writes its proxy count
    # How the other replicas reach this one's admin API (http://HOST:PORT), written on
    # the Lease while it leads so followers can forward experiment requests to it.
    # Default: $POD_IP and the admin port.
    advertise_admin: str | None = None


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
