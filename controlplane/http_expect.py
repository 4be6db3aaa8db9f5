"""The admin server's answer to an ``Expect`` header (RFC 9110 §10.1.1).

aiohttp's default handler echoes an unknown expectation in a text body and
answers 500 when the value is not UTF-8 (it cannot encode it back). This one
answers 417 without echoing anything. Every admin route passes it as its
``expect_handler``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11


async def expect(request: web.Request) -> None:
    if request.version != HttpVersion11:
        return  # HTTP/1.0 has no expectations to meet
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the 100 is not part of the answer's size
        return
    raise web.HTTPExpectationFailed(text="only 'Expect: 100-continue' is supported")


def catch_unmatched(app: web.Application) -> None:
    """Routes every request no other route takes to a handler that answers as aiohttp
    would (405 with Allow when the path exists, else 404), so the expectation check
    above runs for those requests too. Add it last."""

    async def unmatched(request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is not catch_all.resource:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    catch_all = app.router.add_route("*", "/{_unmatched:.*}", unmatched, expect_handler=expect)
