"""Webhooks: signed, retried with backoff while the receiver is down, never lost, in order,
and never in the way of a decision."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from controlplane.experiment import Webhook
from controlplane.notify import Notifier, event, signature
from tests.unit.rollout.fakes import experiment, load, manager, until


class Receiver:
    def __init__(self) -> None:
        self.up = False
        self.got: list[tuple[dict[str, Any], dict[str, str], bytes]] = []
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.server = TestServer(app, host="127.0.0.1")

    async def hook(self, request: web.Request) -> web.Response:
        if not self.up:
            return web.Response(status=503)
        raw = await request.read()
        self.got.append((json.loads(raw), dict(request.headers), raw))
        return web.Response(text="ok")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))


async def test_a_receiver_that_is_down_gets_everything_when_it_returns(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.server.start_server()
    secret = tmp_path / "secret"
    secret.write_text("hush\n")
    notifier = Notifier(backoff_s=0.01, max_backoff_s=0.05)
    hook = Webhook(receiver.url, str(secret))
    try:
        for i in range(5):
            notifier.emit(event("phase", experiment="x", step=i), (hook,))
        await asyncio.sleep(0.2)
        assert receiver.got == [] and notifier.stats()[receiver.url]["failedAttempts"] > 0
        receiver.up = True
        await until(lambda: len(receiver.got) == 5, 5)
        assert [body["step"] for body, _, _ in receiver.got] == [0, 1, 2, 3, 4]
        _, headers, raw = receiver.got[0]
        stamp = headers["x-sluice-timestamp"]
        expected = "sha256=" + hmac.new(b"hush", stamp.encode() + b"." + raw,
                                        hashlib.sha256).hexdigest()
        assert headers["x-sluice-signature"] == expected == signature(b"hush", stamp, raw)
    finally:
        await notifier.close()
        await receiver.server.close()


async def test_slack_format_and_a_refusing_receiver_is_not_retried() -> None:
    receiver = Receiver()
    receiver.up = True
    await receiver.server.start_server()
    notifier = Notifier(backoff_s=0.01)
    try:
        notifier.emit(event("phase", experiment="x", service="chat", previousPhase="Progressing",
                            phase="RolledBack", reason="errors: harm"),
                      (Webhook(receiver.url, format="slack"),))
        notifier.emit(event("phase"), (Webhook(receiver.url.replace("/hook", "/nope")),))
        await until(lambda: len(receiver.got) == 1, 5)
        body = receiver.got[0][0]
        assert "RolledBack" in body["text"] and body["blocks"][0]["type"] == "section"
        await until(lambda: notifier.stats()[receiver.url.replace("/hook", "/nope")][
            "dropped"] == 1, 5)
    finally:
        await notifier.close()
        await receiver.server.close()


async def test_decisions_are_not_delayed_by_a_receiver_that_is_down() -> None:
    receiver = Receiver()
    await receiver.server.start_server()
    notifier = Notifier(backoff_s=0.01, max_backoff_s=0.05)
    mgr, store, source = manager()
    mgr.deps.notify = notifier.emit
    source.error_rate["v2"] = 0.1
    stop = asyncio.Event()
    try:
        load(store, mgr, experiment(notify=[{"webhook": {"url": receiver.url}}]))
        task = asyncio.get_running_loop().create_task(mgr.run(stop))
        await until(lambda: mgr.view("canary")["phase"] == "RolledBack", 20)  # type: ignore[index]
        assert receiver.got == []  # the receiver was down the whole time
        receiver.up = True
        # Each event retries on its own backoff, so they may arrive in any order.
        wanted = {("rollback", "RollingBack"), ("phase", "RollingBack"), ("phase", "RolledBack")}
        await until(lambda: wanted <= {(b["type"], b.get("phase")) for b, _, _ in receiver.got},
                    5)
        rollback = next(b for b, _, _ in receiver.got if b["type"] == "rollback")
        assert rollback["evidence"][0]["verdict"] == "FAIL" and "errors" in rollback["reason"]
        stop.set()
        await task
    finally:
        await notifier.close()
        await receiver.server.close()
