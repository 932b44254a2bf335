"""The ceiling for bench-capture: a raw ASGI app that answers every request with a fixed 302."""

_HEADERS = [
    (b"location", b"https://example.com/landing"),
    (b"cache-control", b"no-store"),
    (b"content-length", b"0"),
]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send({"type": "http.response.start", "status": 302, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b""})
