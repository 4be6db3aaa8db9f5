"""mTLS for the xDS port: server credentials that follow the files, and who a proxy is.

``server_credentials`` builds gRPC credentials that re-read the certificate,
key and client CA when their files change on disk (checked at each new
handshake): rotation takes effect for new streams, and streams already open
keep their connection. With a client CA every proxy must present a
certificate it signed.

``authorize`` ties a stream to its certificate: a proxy may only ask for
resources as the node id its certificate names — a DNS SAN equal to the node
id, or a URI SAN whose last path segment is the node id
(``spiffe://DOMAIN/ns/NS/sa/SA/NODE``) — so one sidecar cannot read another's
configuration. https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#authentication
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger("sluice.xds")

SAN_KEY = "x509_subject_alternative_name"


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    client_ca: str | None = None  # None: no client certificates asked for


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from exc


def _stamp(files: TlsFiles) -> tuple[object, ...]:
    out: list[object] = []
    for path in (files.cert, files.key, files.client_ca):
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _configuration(files: TlsFiles) -> Any:
    key = _read(files.key, "--tls-key")
    cert = _read(files.cert, "--tls-cert")
    ca = _read(files.client_ca, "--tls-client-ca") if files.client_ca else None
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials that pick up rotated files for every new connection."""
    current = {"stamp": _stamp(files)}
    initial = _configuration(files)

    def fetch() -> Any:
        stamp = _stamp(files)
        if stamp == current["stamp"]:
            return None  # unchanged: gRPC keeps using the configuration it has
        try:
            config = _configuration(files)
        except ValueError as exc:
            log.error("TLS files changed but cannot be read (the old ones stay): %s", exc)
            return None
        current["stamp"] = stamp
        log.info("TLS certificate files changed: new connections use them")
        return config

    return grpc.dynamic_ssl_server_credentials(
        initial, fetch, require_client_authentication=files.client_ca is not None)


def peer_names(auth_context: Mapping[str, Sequence[bytes]]) -> list[str]:
    """The names a peer's certificate vouches for: DNS SANs, and URI SANs' last segments."""
    names: list[str] = []
    for raw in auth_context.get(SAN_KEY, ()):
        san = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if "://" in san:
            names.append(san.rstrip("/").rsplit("/", 1)[-1])
        else:
            names.append(san)
    return names


def authorize(node_id: str, auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """None when the peer's certificate names ``node_id``; else why not (for the error)."""
    if not auth_context.get("transport_security_type"):
        return None  # plaintext: nothing to check (the server warns about it at start)
    names = peer_names(auth_context)
    if node_id in names:
        return None
    shown = ", ".join(names[:5]) or "none"
    return (f"node id {node_id[:80]!r} is not in the client certificate (its names: "
            f"{shown[:200]}); a proxy may only ask as the node its certificate names")
