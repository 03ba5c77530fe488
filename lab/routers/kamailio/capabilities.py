"""What the router under test can do, so scenarios it does not support are skipped with a reason.

siplab's own routers (the reference router, siplab's kamailio.cfg) provide everything. A user's
kamailio.cfg provides what its text shows, unless the topology declares it (``[router]
provides``): ``auth`` (it challenges: ``www_authorize``, ``proxy_authorize``, ``auth_check``,
``auth_challenge``), ``registrar`` (``save("location")``), ``durable`` (bindings written to
the DB, so they survive a restart: usrloc ``db_mode`` not 0), ``tcp`` (it listens on TCP:
``LISTEN_TCP`` or a ``listen=tcp:``), and the dispatcher algorithm: ``ds_alg`` when the cfg
passes the lab's ``DS_ALG`` to ``ds_select_dst`` (a scenario may then choose the algorithm),
else ``ds_alg:N`` for each algorithm number the cfg uses itself. An external router provides
only what the topology declares.

Scenarios say what they need with ``@pytest.mark.router_needs("auth")`` (or ``"ds_alg:4"``:
round robin, either chosen by the scenario or fixed in the cfg).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from lab.topology import RouterSpec

__all__ = [
    "ALL",
    "detect",
    "missing",
    "parse_router_option",
    "router_capabilities",
    "router_spec",
    "skip_unsupported",
]

ALL = frozenset({"auth", "registrar", "durable", "tcp", "ds_alg"})
"""Everything siplab's own routers provide."""

_AUTH = re.compile(
    r"\b(www_authorize|proxy_authorize|auth_check|auth_challenge|pv_www_authorize)\s*\("
)
_SAVE = re.compile(r"\bsave\s*\(\s*\"location")
_DB_MODE = re.compile(r"modparam\s*\(\s*\"usrloc\"\s*,\s*\"db_mode\"\s*,\s*\"?([^)\"\s]+)")
_TCP = re.compile(r"^\s*(listen\s*=\s*tcp:|listen\s*=\s*LISTEN_TCP\b)", re.MULTILINE)
_DS_SELECT = re.compile(r"\bds_select(?:_dst|_domain)?\s*\(\s*[^,]+,\s*\"?\s*([A-Z_]+|\d+)")


def _code(text: str) -> str:
    """The cfg without ``#`` comment lines (preprocessor ``#!`` lines stay)."""
    return "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#") or "#!" in line
    )


def detect(text: str) -> frozenset[str]:
    """Capabilities shown by a kamailio.cfg's text (module docstring)."""
    code = _code(text)
    found: set[str] = set()
    if _AUTH.search(code):
        found.add("auth")
    if _SAVE.search(code):
        found.add("registrar")
        mode = _DB_MODE.search(code)
        if mode is not None and mode.group(1) != "0":
            found.add("durable")
    if _TCP.search(code):
        found.add("tcp")
    for match in _DS_SELECT.finditer(code):
        alg = match.group(1)
        found.add("ds_alg" if alg == "DS_ALG" else f"ds_alg:{alg}" if alg.isdigit() else "")
    found.discard("")
    return frozenset(found)


def router_capabilities(spec: RouterSpec) -> frozenset[str]:
    """What the router of ``spec`` provides (declared, detected, or siplab's: :data:`ALL`).

    Raises:
        OSError: a user's cfg cannot be read.
    """
    if spec.provides:
        return frozenset(spec.provides)
    if spec.external:
        return frozenset()
    if spec.kind == "kamailio" and spec.config:
        return detect(Path(spec.config).read_text(encoding="utf-8", errors="replace"))
    return ALL


def missing(needs: str, provides: frozenset[str]) -> bool:
    """True when ``needs`` (``auth`` ... or ``ds_alg:N``) is not in ``provides``."""
    if needs in provides:
        return False
    return not (needs.startswith("ds_alg:") and "ds_alg" in provides)


def parse_router_option(value: str) -> tuple[str, str]:
    """``--router`` as ``(kind, version)``: ``kamailio:6.0`` -> ``("kamailio", "6.0")``.

    Raises:
        ValueError: not ``reference`` or ``kamailio[:VERSION]``.
    """
    kind, _, version = value.partition(":")
    if kind not in ("reference", "kamailio") or (version and kind != "kamailio"):
        raise ValueError(f"--router {value!r}: expected reference, kamailio or kamailio:VERSION")
    return kind, version


def router_spec(router: str, config: str | None = None) -> RouterSpec:
    """``[router]`` from ``--router kind[:version]`` and ``--router-config`` (made absolute).

    Raises:
        ValueError: a bad option value (the message names it).
    """
    from lab.topology import RouterSpec

    kind, version = parse_router_option(router)
    cfg = str(Path(config).resolve()) if config else ""
    try:
        return RouterSpec(kind=kind, version=version, config=cfg)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"--router {router} --router-config {config}: {exc}") from None


def skip_unsupported(spec: RouterSpec, items: list[pytest.Item]) -> None:
    """Mark every item whose ``router_needs(...)`` the router of ``spec`` lacks as skipped."""
    import pytest

    if not any(item.get_closest_marker("router_needs") for item in items):
        return
    try:
        provides = router_capabilities(spec)
    except OSError as exc:
        raise pytest.UsageError(f"router config {spec.config}: {exc.strerror}") from None
    where = f"the router cfg {spec.config}" if spec.config else "the external router"
    if not spec.config and not spec.external:
        where = "the router"
    for item in items:
        for mark in item.iter_markers("router_needs"):
            for needs in map(str, mark.args):
                if not missing(needs, provides):
                    continue
                shown = ", ".join(sorted(provides)) or "nothing declared"
                item.add_marker(
                    pytest.mark.skip(reason=f"{where} does not provide {needs!r} ({shown})")
                )
