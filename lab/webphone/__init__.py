"""The lab's web phone: a static page on SIP.js (npm, pinned in ``package.json``, installed into
the git-ignored ``node_modules`` by ``scripts/setup.sh``) and a tiny HTTP server for it.

``python -m lab.webphone --dir runs/lab`` serves the page on 127.0.0.1 and prints a URL with
the lab router's WSS address and domain filled in; the browser must trust the lab CA
(``<run>/certs/ca.pem``) or the router's certificate, see README.
"""

from __future__ import annotations

import functools
import http.server
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).parent
SIPJS = HERE / "node_modules" / "sip.js" / "lib" / "index.js"


class WebPhoneMissing(RuntimeError):
    """SIP.js is not installed (run scripts/setup.sh)."""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class WebPhoneServer:
    """The page on ``http://host:port/`` (127.0.0.1 counts as a secure context in browsers)."""

    httpd: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/index.html"

    def url(self, **params: str) -> str:
        return f"{self.base}?{urlencode(params)}" if params else self.base

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def serve_webphone(host: str = "127.0.0.1", port: int = 0) -> WebPhoneServer:
    """Serve the page in a background thread."""
    if not SIPJS.is_file():
        raise WebPhoneMissing(f"{SIPJS} not found: run scripts/setup.sh (npm install in {HERE})")
    handler = functools.partial(_Quiet, directory=str(HERE))
    httpd = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="webphone-http", daemon=True)
    thread.start()
    return WebPhoneServer(httpd, thread)
