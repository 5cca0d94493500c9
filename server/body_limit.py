"""Request bodies are bounded while they are read, before anything parses
them and before authentication: FastAPI reads and parses a JSON body before
it resolves the dependencies that check who is asking, so an anonymous
200 MB body to an admin route was parsed in full before its 401 (measured:
915 MB of server memory). A pure ASGI middleware, so nothing is buffered."""

from __future__ import annotations

import json

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """413 for a body over `default` bytes (or the route's own limit in
    `larger`): at once from Content-Length, or as soon as a chunked body
    passes the limit."""

    def __init__(self, app: ASGIApp, *, default: int, larger: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.default)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False  # uvicorn refuses a malformed length itself
            if too_large:
                await _refuse(send, limit)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException: FastAPI passes it through its body
                    # parsing unchanged, and answers 413.
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, _detail(limit))
            return message

        await self.app(scope, limited, send)


def _detail(limit: int) -> str:
    return f"request body over {limit} bytes"


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": _detail(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
