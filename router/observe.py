"""Observability shared by the router, the emulator and the UA: events and metrics.

Events (``events.jsonl``): one JSON object per line, for every SIP message in and out and for every
state change worth seeing. Every message line has at least::

    t        unix time, seconds (float)
    node     name of the component that wrote it
    event    "sip" for messages; "retransmit", "drop", "dispatcher_state", ... otherwise
    dir      "in" | "out"
    method   request method, or the CSeq method of a response
    status   response code, null for requests
    call_id, cseq (int), peer ("ip:port"), branch (top Via branch), transport

and ``raw`` (the message text) when the log was opened with ``raw=True``, which is what call
ladders and the pcap writer read. ``reports/`` loads these with declared dtypes; keep the names.

Metrics: counters and gauges rendered in the Prometheus text format (version 0.0.4).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from router.sip import Request, Response, SipError

Address = tuple[str, int]


def _peer(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EventLog:
    """Buffered JSON-lines writer. ``flush()`` is called by the driver after each batch."""

    def __init__(
        self,
        path: str | Path | None,
        node: str,
        *,
        raw: bool = True,
        clock: Callable[[], float] = time.time,
        buffer_lines: int = 512,
    ) -> None:
        self.node = node
        self.raw = raw
        self.clock = clock
        self._buffer: list[str] = []
        self._buffer_lines = buffer_lines
        self._file: IO[str] | None = None
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def emit(self, record: dict[str, Any]) -> None:
        record.setdefault("t", self.clock())
        record.setdefault("node", self.node)
        for listener in self.listeners:
            listener(record)
        if self._file is None:
            return
        self._buffer.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        if len(self._buffer) >= self._buffer_lines:
            self.flush()

    def event(self, kind: str, **fields: Any) -> None:
        self.emit({"event": kind, **fields})

    def message(
        self,
        direction: str,
        message: Request | Response,
        peer: Address,
        *,
        transport: str = "udp",
        data: bytes | None = None,
        kind: str = "sip",
    ) -> None:
        if self._file is None and not self.listeners:
            return
        self._message(direction, message, peer, transport, data, kind)

    @property
    def active(self) -> bool:
        """False when nothing would be written or heard (callers may skip building records)."""
        return self._file is not None or bool(self.listeners)

    def _message(
        self,
        direction: str,
        message: Request | Response,
        peer: Address,
        transport: str,
        data: bytes | None,
        kind: str,
    ) -> None:
        record: dict[str, Any] = {
            "event": kind,
            "dir": direction,
            "transport": transport,
            "peer": _peer(peer),
        }
        try:
            cseq = message.cseq
            record["cseq"] = cseq.seq
            record["method"] = message.method if isinstance(message, Request) else cseq.method
        except SipError:
            record["cseq"] = None
            record["method"] = message.method if isinstance(message, Request) else None
        record["status"] = message.status if isinstance(message, Response) else None
        try:
            record["call_id"] = message.call_id
        except SipError:
            record["call_id"] = None
        try:
            record["branch"] = message.top_via.branch
        except (SipError, IndexError):
            record["branch"] = None
        if self.raw and data is not None:
            record["raw"] = data.decode("utf-8", "replace")
        self.emit(record)

    def flush(self) -> None:
        if self._file is not None and self._buffer:
            self._file.write("\n".join(self._buffer) + "\n")
            self._file.flush()
            self._buffer.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


class Metrics:
    """Counters with labels plus gauge callbacks, rendered as Prometheus text."""

    def __init__(self, prefix: str = "siplab") -> None:
        self.prefix = prefix
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._gauges: list[Callable[[], Iterable[tuple[str, dict[str, str], float]]]] = []

    def describe(self, name: str, text: str) -> None:
        self._help[name] = text

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items())) if len(labels) > 1 else tuple(labels.items())
        series = self._counters[name]
        series[key] = series.get(key, 0.0) + amount

    def add(self, name: str, key: tuple[tuple[str, str], ...], amount: float = 1.0) -> None:
        """``inc`` for hot paths: ``key`` is the label items already sorted by name."""
        series = self._counters[name]
        series[key] = series.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def add_gauges(self, source: Callable[[], Iterable[tuple[str, dict[str, str], float]]]) -> None:
        self._gauges.append(source)

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._counters):
            full = f"{self.prefix}_{name}"
            if name in self._help:
                lines.append(f"# HELP {full} {self._help[name]}")
            lines.append(f"# TYPE {full} counter")
            for key, val in sorted(self._counters[name].items()):
                lines.append(f"{full}{_labels(dict(key))} {val:g}")
        seen: set[str] = set()
        for source in self._gauges:
            for name, labels, val in source():
                full = f"{self.prefix}_{name}"
                if full not in seen:
                    seen.add(full)
                    if name in self._help:
                        lines.append(f"# HELP {full} {self._help[name]}")
                    lines.append(f"# TYPE {full} gauge")
                lines.append(f"{full}{_labels(labels)} {val:g}")
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"
