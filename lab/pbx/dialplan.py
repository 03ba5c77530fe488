"""The emulator's dialplan: a handful of applications, in TOML, the same on every node.

Default (what ``DEFAULT_DIALPLAN`` holds)::

    [extensions.600]          # Answer(); Wait until the caller hangs up
    app = "answer"
    [extensions.601]          # Answer(); Wait(60); Hangup()
    app = "answer"
    hangup_after = 60
    [extensions.602]
    app = "answer"
    hangup_after = 3
    [extensions.700]          # Dial(PJSIP/101)
    app = "dial"
    target = "101"
    [extensions.800]          # Queue(queue1)
    app = "queue"
    queue = "queue1"

plus ``dial_users = true``: an extension equal to a provisioned endpoint with an AOR runs
``Dial(PJSIP/<ext>)``, and so does any extension the real node's catch-all ``_X.`` matches (a
digit then one or more characters, asterisk-images/asterisk/templates/extensions.conf): such an
INVITE gets 100, then, with no such endpoint or no contact, 404 with ``Reason: Q.850;cause=3``,
and an OPTIONS to it 200, as measured on Asterisk 22.10; ``abc`` or ``9`` match nothing: 404
before any 100. Durations are seconds of the real dialplan; the node multiplies them by
its ``time_scale``. One dialplan serves every endpoint ``context`` (XXX: real Asterisk would
look the extension up in the endpoint's context; the lab provisions one context).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from router.configfile import FieldError, load_file


@dataclass(frozen=True, slots=True)
class Extension:
    """One extension's application."""

    app: Literal["answer", "dial", "queue", "busy", "congestion"]
    """answer: Answer() then wait; dial: Dial(PJSIP/target); queue: Queue(queue);
    busy: Busy() (486); congestion: Congestion() (503)."""
    hangup_after: float | None = None
    """answer: hang up this long after answering (None = wait for the caller)."""
    target: str = ""
    """dial: the endpoint/AOR to dial."""
    queue: str = ""
    """queue: the realtime queue name."""
    timeout: float | None = None
    """dial: ring timeout (None = ring until the callee answers or fails)."""

    def __post_init__(self) -> None:
        if self.app == "dial" and not self.target:
            raise FieldError("target", "dial needs a target")
        if self.app == "queue" and not self.queue:
            raise FieldError("queue", "queue needs a queue name")
        if self.hangup_after is not None and self.hangup_after < 0:
            raise FieldError("hangup_after", "must be >= 0")


def _default_extensions() -> dict[str, Extension]:
    return {
        "600": Extension("answer"),
        "601": Extension("answer", hangup_after=60.0),
        "602": Extension("answer", hangup_after=3.0),
        "700": Extension("dial", target="101"),
        "800": Extension("queue", queue="queue1"),
    }


@dataclass(frozen=True, slots=True)
class Dialplan:
    """Extensions plus the implicit "dial a provisioned user" rule."""

    extensions: dict[str, Extension] = field(default_factory=_default_extensions)
    dial_users: bool = True
    """An unknown extension that names an endpoint with AORs dials it."""

    def lookup(self, exten: str, is_user: bool) -> Extension | None:
        """The application for ``exten``; ``is_user`` says an endpoint of that name exists."""
        found = self.extensions.get(exten)
        if found is not None:
            return found
        if self.dial_users and (is_user or catch_all(exten)):
            return Extension("dial", target=exten)
        return None


def catch_all(exten: str) -> bool:
    """Asterisk's ``_X.``: one digit, then one or more characters of any kind."""
    return len(exten) >= 2 and exten[0] in "0123456789"


DEFAULT_DIALPLAN = Dialplan()


def load_dialplan(path: str | Path) -> Dialplan:
    """Read a dialplan TOML.

    Raises:
        ConfigError: naming the file, field and reason.
    """
    return load_file(path, Dialplan)
