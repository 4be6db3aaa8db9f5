"""Notifications: webhooks for phase changes, rollbacks, stalls and control-plane trouble.

Delivery never blocks a decision: ``emit`` only queues. One worker per target
sends in order and retries a failed POST (connection error, timeout, 5xx, 429)
with exponential backoff (0.5 s doubling to 60 s) until it is delivered or the
event is older than ``max_age_s`` (an hour); a 4xx other than 429 is given
up at once (the receiver refused it). Queues are bounded; when one overflows,
the oldest event is dropped and counted.

Signed bodies: with a secret, ``X-Sluice-Timestamp: UNIX`` and
``X-Sluice-Signature: sha256=HEX`` where HEX is the HMAC-SHA256 of
``TIMESTAMP.BODY`` — a receiver checks both, so a captured request cannot be
replayed later. The secret is read from its file at each send (rotation needs
no restart).

Formats: ``json`` (the event as is) or ``slack`` (``{"text", "blocks"}``, which
Slack's incoming webhooks and compatible chat tools accept).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from controlplane.experiment import Webhook

log = logging.getLogger("sluice.notify")

MAX_QUEUE = 10_000


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A notification body: ``type``, ``id``, ``at`` (ISO time) and the fields given."""
    now = time.time()
    return {"type": kind, "id": uuid.uuid4().hex, "at": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "ts": now, **fields}


def slack(body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("type", "event")
    if kind == "phase":
        head = (f"*{body.get('experiment')}* ({body.get('service')}): "
                f"{body.get('previousPhase')} → *{body.get('phase')}*")
    elif kind == "config":
        head = f"Sluice rejected configuration ({len(body.get('errors', []))} errors)"
    elif kind == "nack":
        head = f"Proxy *{body.get('proxy')}* rejected configuration"
    else:
        head = f"*{body.get('experiment', 'sluice')}*: {kind}"
    detail = str(body.get("reason") or body.get("message") or "")[:2900]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn",
                                                                  "text": head}}]
    if detail:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": detail}})
    return {"text": f"{head}\n{detail}".strip(), "blocks": blocks}


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body,
                                hashlib.sha256).hexdigest()


@dataclass
class _Target:
    hook: Webhook
    queue: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_QUEUE))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    task: asyncio.Task[None] | None = None


class Notifier:
    def __init__(self, defaults: Iterable[Webhook] = (), *, max_age_s: float = 3600.0,
                 backoff_s: float = 0.5, max_backoff_s: float = 60.0,
                 timeout_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.defaults = tuple(defaults)
        self.max_age_s = max_age_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._targets: dict[Webhook, _Target] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def emit(self, body: dict[str, Any], hooks: Iterable[Webhook] = ()) -> None:
        """Queues ``body`` for the default targets and ``hooks``; never blocks, never raises."""
        if self._closed:
            return
        for hook in dict.fromkeys((*self.defaults, *hooks)):
            target = self._targets.get(hook)
            if target is None:
                target = self._targets[hook] = _Target(hook)
            if len(target.queue) == target.queue.maxlen:
                target.dropped += 1
            target.queue.append(body)
            target.wake.set()
            if target.task is None or target.task.done():
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    continue  # no loop (a sync caller in a test): delivered when one runs
                target.task = loop.create_task(self._deliver(target))

    def stats(self) -> dict[str, dict[str, int]]:
        return {t.hook.url: {"queued": len(t.queue), "delivered": t.delivered,
                             "failedAttempts": t.failed_attempts, "dropped": t.dropped}
                for t in self._targets.values()}

    async def close(self) -> None:
        self._closed = True
        for target in self._targets.values():
            if target.task is not None:
                target.task.cancel()
        await asyncio.gather(*(t.task for t in self._targets.values() if t.task),
                             return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _deliver(self, target: _Target) -> None:
        backoff = self.backoff_s
        while target.queue:
            body = target.queue[0]
            if self.clock() - float(body.get("ts", self.clock())) > self.max_age_s:
                target.queue.popleft()
                target.dropped += 1
                continue
            outcome = await self._send(target.hook, body)
            if outcome == "retry":
                target.failed_attempts += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            target.queue.popleft()
            backoff = self.backoff_s
            if outcome == "ok":
                target.delivered += 1
            else:
                target.dropped += 1

    async def _send(self, hook: Webhook, body: dict[str, Any]) -> str:
        payload = slack(body) if hook.format == "slack" else body
        data = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {"content-type": "application/json", "user-agent": "sluice"}
        if hook.secret_file:
            try:
                secret = Path(hook.secret_file).read_bytes().strip()
            except OSError as exc:
                log.error("webhook %s: cannot read secret %s: %s", hook.url, hook.secret_file,
                          exc.strerror)
                return "retry"
            stamp = str(int(self.clock()))
            headers["x-sluice-timestamp"] = stamp
            headers["x-sluice-signature"] = signature(secret, stamp, data)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        try:
            async with self._session.post(hook.url, data=data, headers=headers) as r:
                await r.read()
                if r.status < 300:
                    return "ok"
                if r.status == 429 or r.status >= 500:
                    return "retry"
                log.error("webhook %s refused an event (HTTP %d); dropped", hook.url, r.status)
                return "refused"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("webhook %s: %s; will retry", hook.url, exc)
            return "retry"
