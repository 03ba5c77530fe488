"""Password generation and the SIPp injection file for provisioned users.

Passwords use a 64-symbol alphabet (letters, digits, ``-``, ``_``) so that one random byte
maps to one symbol without bias (256 is a multiple of 64), which makes 100,000 passwords a
single ``token_bytes`` call, and none of them contains a character that is special in the SIPp
CSV (``;``), in its ``[authentication ...]`` keyword (``=``, ``]``, space) or in SQL.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterable
from pathlib import Path

from router.realtime.records import UserCredential

PASSWORD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
assert len(PASSWORD_ALPHABET) == 64


def generate_passwords(count: int, length: int, *, seed: int | None = None) -> list[str]:
    """``count`` passwords of ``length`` symbols; reproducible when ``seed`` is given.

    Without a seed the bytes come from ``secrets`` (the OS CSPRNG); with one, from
    ``random.Random(seed)``, which is fine for a lab and lets two runs share credentials.

    No password starts with ``0x`` or ``0X``: SIPp reads an ``[authentication ...
    password=0x...]`` value as hexadecimal bytes, so such a user (about 1 in 4,096) would get
    a second 401 from SIPp in every storm. Those are drawn again from the same source
    (rejection sampling keeps the others uniform, and a seed still gives the same list).
    """
    if length < 1:
        raise ValueError("password length must be >= 1")
    if count < 0:
        raise ValueError("count must be >= 0")
    draw = random.Random(seed).randbytes if seed is not None else secrets.token_bytes
    total = count * length
    text = draw(total).translate(_BYTE_TO_SYMBOL).decode("ascii")
    passwords = [text[i : i + length] for i in range(0, total, length)]
    for index, password in enumerate(passwords):
        while _sipp_reads_as_hex(password):
            password = draw(length).translate(_BYTE_TO_SYMBOL).decode("ascii")
        passwords[index] = password
    return passwords


def _sipp_reads_as_hex(password: str) -> bool:
    return password[:2] in ("0x", "0X")


_BYTE_TO_SYMBOL = bytes(ord(PASSWORD_ALPHABET[b & 63]) for b in range(256))


def write_sipp_csv(path: str | os.PathLike[str], users: Iterable[UserCredential]) -> int:
    """Write a SIPp ``-inf`` injection file; returns the number of users written.

    Format (SIPp docs, "Injecting values from an external CSV during calls"): the first line
    is the read order, ``SEQUENTIAL``; then one line per call with ``;``-separated fields:
    ``[field0]`` user, ``[field1]`` domain, ``[field2]`` the auth keyword
    ``[authentication username=<user> password=<pw>]`` that SIPp expands in a scenario.

    Raises:
        OSError: the file cannot be written.
        ValueError: a field contains ``;`` or a line break (it would shift the columns).
    """
    lines = ["SEQUENTIAL"]
    for user in users:
        for value in (user.username, user.domain, user.password):
            if any(ch in value for ch in ";\r\n ]"):
                raise ValueError(f"value {value!r} cannot be written to a SIPp CSV")
        lines.append(
            f"{user.username};{user.domain};"
            f"[authentication username={user.username} password={user.password}]"
        )
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(target)
    return len(lines) - 1
