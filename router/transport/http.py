"""A tiny HTTP/1.0 endpoint for metrics and status (trio).

``GET /metrics`` returns Prometheus text, ``GET /status`` JSON; anything else 404. One request per
connection, bounded read size and time, so a misbehaving client costs one connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger("siplab.http")

Route = Callable[[], tuple[str, str]]
"""Returns (content type, body)."""


def json_route(producer: Callable[[], Any]) -> Route:
    def route() -> tuple[str, str]:
        return "application/json", json.dumps(producer(), indent=2, default=str) + "\n"

    return route


async def serve_http(
    host: str,
    port: int,
    routes: dict[str, Route],
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[:2]

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(5):
                data = b""
                while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
                line = data.split(b"\n", 1)[0].decode("latin-1").strip()
                parts = line.split()
                path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
                route = routes.get(path)
                if len(parts) < 2 or parts[0] != "GET":
                    status, ctype, body = "405 Method Not Allowed", "text/plain", "GET only\n"
                elif route is None:
                    status, ctype, body = "404 Not Found", "text/plain", "not found\n"
                else:
                    status = "200 OK"
                    ctype, body = route()
                payload = body.encode()
                head = (
                    f"HTTP/1.0 {status}\r\nContent-Type: {ctype}; charset=utf-8\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                )
                await stream.send_all(head.encode() + payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("http handler failed")
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        task_status.started((bound[0], bound[1]))
