"""Asterisk's realtime value encoding (``main/config.c``: ``ast_realtime_encode_chunk`` /
``ast_realtime_decode_chunk``).

Asterisk's realtime drivers (res_config_pgsql, res_config_odbc) write ``;`` and ``^`` in a
value as ``^XX`` (two upper-case hex digits: ``;`` -> ``^3B``, ``^`` -> ``^5E``) because ``;``
separates values in its config layer, and decode ``^XX`` on read. Measured with Asterisk 22.10
on the lab's PostgreSQL (docs/asterisk-measurements.md): a ps_contacts row is
``id = '101^3B@<md5>'``, ``uri = 'sip:101@h:p^3Btransport=UDP'``, ``path = '<sip:r^3Blr>'``.
Anything that shares ``ps_contacts`` with real Asterisk nodes must write and read it this way.
"""

from __future__ import annotations

import re

_ESCAPED = re.compile(r"\^([0-9A-Fa-f]{2})")


def ast_encode(value: str) -> str:
    """``value`` with ``;`` and ``^`` as ``^3B`` / ``^5E`` (what Asterisk stores)."""
    if ";" not in value and "^" not in value:
        return value
    return "".join(f"^{ord(c):02X}" if c in ";^" else c for c in value)


def ast_decode(value: str) -> str:
    """Every ``^XX`` back to its character (what Asterisk reads)."""
    if "^" not in value:
        return value
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), value)


__all__ = ["ast_decode", "ast_encode"]
