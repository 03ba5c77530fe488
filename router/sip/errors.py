"""Errors of the SIP core, each carrying the status a server would answer with.

Following h11's ``_util.py`` an error knows what goes on the wire: every class has a class-level
``status`` and ``reason`` (RFC 3261 §21), and an instance may override the status when one
class covers several outcomes (``SipParseError`` is 400 for most defects, 505 for a bad
SIP-Version, 513 for a message too large to frame).

Whose fault it was is said by the class: ``SipParseError`` always means "the peer sent bytes we
cannot accept". Whether a reply can be sent at all is ``SipParseError.can_reply``: RFC 3261
§8.2.6.2 builds a response from Via, From, To, Call-ID and CSeq, so a 400 can only be sent when
those five parsed. Malformed responses are never answered (§18.1.2: drop).

The reason-phrase table lives here, not in ``message.py``, so that an error can name its own
reason without an import cycle; ``message.reason_phrase`` reads it.
"""

from __future__ import annotations

# RFC 3261 §21 plus the extension codes a router meets in practice (RFC 3265, 3329, 4028,
# 4412, 5079, 5360, 6086, 8599).
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

# RFC 3261 §21: "an unrecognized response ... MUST be treated as being equivalent to the x00
# response code of that class".
_CLASS_PHRASES = {
    1: "Trying",
    2: "OK",
    3: "Multiple Choices",
    4: "Bad Request",
    5: "Server Internal Error",
    6: "Busy Everywhere",
}


def standard_reason(status: int) -> str:
    """The RFC reason phrase for ``status``, or the x00 phrase of its class, or ``""``."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return _CLASS_PHRASES.get(status // 100, "")


class SipError(Exception):
    """Base of every error the core raises on purpose.

    ``status``/``reason`` say what a server answers. They are class attributes that an instance
    may shadow (``status=`` in the constructor); mypy's ``ClassVar`` would forbid the instance
    override the contract asks for, so they are declared as plain attributes with class
    defaults.
    """

    status: int = 400
    reason: str = "Bad Request"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None and status != type(self).status:
            self.status = status
            self.reason = standard_reason(status)

    @property
    def message(self) -> str:
        """The human-readable text given to the constructor."""
        return str(self.args[0]) if self.args else ""


class SipParseError(SipError):
    """The peer sent something that is not acceptable SIP.

    Attributes:
        trigger: a short named cause for counters and logs, e.g. ``"missing_header"``.
        can_reply: True when Via, From, To, Call-ID and CSeq of a *request* parsed, so a server
            can build the error response (RFC 3261 §8.2.6.2); always False for responses.
    """

    status = 400
    reason = "Bad Request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        trigger: str = "malformed",
        can_reply: bool = False,
    ) -> None:
        super().__init__(message, status=status)
        self.trigger = trigger
        self.can_reply = can_reply
        self.partial: object | None = None
        """The request as far as it parsed, when ``can_reply`` (to build the 400 from)."""

    def __repr__(self) -> str:
        return (
            f"SipParseError({self.message!r}, status={self.status}, "
            f"trigger={self.trigger!r}, can_reply={self.can_reply})"
        )


class TooManyHops(SipError):
    """RFC 3261 §16.3 step 3: Max-Forwards is zero and the request is not OPTIONS."""

    status = 483
    reason = "Too Many Hops"


class UnsupportedUriScheme(SipError):
    """RFC 3261 §8.2.2.1: a Request-URI scheme we do not understand."""

    status = 416
    reason = "Unsupported URI Scheme"


class BadExtension(SipError):
    """RFC 3261 §8.2.2.3: a Require option tag we do not support (list in ``unsupported``)."""

    status = 420
    reason = "Bad Extension"

    def __init__(self, message: str, *, unsupported: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unsupported = unsupported


class LoopDetected(SipError):
    """RFC 3261 §16.3 step 4: the request already went through this proxy."""

    status = 482
    reason = "Loop Detected"
