"""The ``[streams]`` section of the router config: TLS (RFC 3261 §26) and WebSocket (RFC 7118).

Example::

    [router]
    listen = ["udp:127.0.0.10:5060", "tls:127.0.0.10:5061", "wss:127.0.0.10:8443"]

    [streams]
    cert = "certs/router.pem"          # PEM certificate chain of the router (tls, wss)
    key = "certs/router.key"           # its private key
    ca = "certs/ca.pem"                # CAs whose client certificates are accepted
    require_client_cert = false        # true: a client without a cert from `ca` is refused
    handshake_timeout = 5.0            # TLS + WebSocket upgrade must finish within (seconds)
    max_connections_per_source = 64    # stream connections one source IP may hold
    max_message_size = 65535           # largest WebSocket message (one SIP message), bytes
    ws_ping_interval = 30.0            # WebSocket ping after this much silence (0 = never)
    idle_timeout = 3600.0              # close a stream connection silent this long (0 = never)

Relative paths are taken from the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.configfile import FieldError


@dataclass(frozen=True)
class StreamsSection:
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    require_client_cert: bool = False
    handshake_timeout: float = 5.0
    max_connections_per_source: int = 64
    max_message_size: int = 65535
    ws_ping_interval: float = 30.0
    idle_timeout: float = 3600.0

    def __post_init__(self) -> None:
        if self.handshake_timeout <= 0:
            raise FieldError("handshake_timeout", "must be > 0")
        if self.max_connections_per_source < 1:
            raise FieldError("max_connections_per_source", "must be >= 1")
        if not 512 <= self.max_message_size <= 16 * 1024 * 1024:
            raise FieldError("max_message_size", "must be between 512 and 16777216 bytes")
        for name in ("ws_ping_interval", "idle_timeout"):
            if getattr(self, name) < 0:
                raise FieldError(name, "must be >= 0 (0 disables it)")
        if (self.cert is None) != (self.key is None):
            raise FieldError("key" if self.key is None else "cert", "cert and key go together")
        if self.require_client_cert and self.ca is None:
            raise FieldError("ca", "require_client_cert needs the CA that signs client certs")
