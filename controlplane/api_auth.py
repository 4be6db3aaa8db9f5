"""Who may read and who may change things through the admin API.

A token file holds one token, or one ``NAME TOKEN`` pair per line (named
tokens: the audit log says which one acted). Mutations need a token from
``--api-token-file`` (401 without a valid one, 403 when there is no token
file: mutations are then off, never open). With ``--api-read-token-file``
the API's reads need a read or a write token too; health, readiness and the
status page's static files stay open (probes, and a page that asks for the
token itself).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/api/v1/openapi.json"})
OPEN_PREFIXES = ("/static/",)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def read_tokens(path: str | None, flag: str = "--api-token-file") -> dict[str, str]:
    """name -> token; a file with one bare token names it by its fingerprint."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.lstrip().startswith("#")]
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        name, _, token = line.partition(" ")
        if not token:
            name, token = f"token-{fingerprint(line)}", line
        token = token.strip()
        if len(token) < 16:
            raise ValueError(f"{flag} {path}:{number}: the token must be at least 16 "
                             "characters")
        tokens[name] = token
    if not tokens:
        raise ValueError(f"{flag} {path}: no token in the file")
    return tokens


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def _match(request: web.Request, tokens: Mapping[str, str]) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    for name, token in tokens.items():
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            return name
    return None


def unauthorized(message: str = "missing or invalid bearer token") -> web.Response:
    return web.json_response({"error": message}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="sluice"'})


@dataclass
class Auth:
    write: dict[str, str] = field(default_factory=dict)
    read: dict[str, str] = field(default_factory=dict)

    def writer(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """(the token's name, or the response refusing the mutation)."""
        if not self.write:
            return None, web.json_response(
                {"error": "mutations are disabled: start sluice serve with --api-token-file "
                          "to allow them"}, status=403)
        name = _match(request, self.write)
        return (name, None) if name is not None else (None, unauthorized())

    def reader_ok(self, request: web.Request) -> bool:
        if not self.read:
            return True
        return _match(request, {**self.read, **self.write}) is not None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        gated = request.method in ("GET", "HEAD") and path not in OPEN_PATHS and not (
            path.startswith(OPEN_PREFIXES))
        if gated and not self.reader_ok(request):
            return unauthorized("this server requires a read token (--api-read-token-file)")
        return await handler(request)
