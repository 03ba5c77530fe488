"""Loading destination lists: router config dicts, Kamailio list files, ``dispatcher`` DB rows.

List file (``ds_load_list``, doc/dispatcher.list)::

    # setid(int) destination(sip uri) flags(int,opt) priority(int,opt) attributes(str,opt)
    1 sip:10.0.0.11:5060 8 0 duid=ast1;weight=50

Blank lines and lines starting with ``#`` are skipped; a ``#`` after a field starts a comment.
Flags may be written in hex (``0x8``). Kamailio skips a bad line with a warning
(``ds_load_mode`` 0); we raise ``DispatcherConfigError`` naming the line and field instead.

DB table ``dispatcher`` version 4 (utils/kamctl/mysql/dispatcher-create.sql): ``id``, ``setid``,
``destination``, ``flags``, ``priority``, ``attrs`` (may be NULL), ``description``; Kamailio
selects setid, destination, flags, priority, attrs and ignores description.

Ordering inside a set is done by ``order_set`` (see there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .destination import Destination, DispatcherConfigError


def _parse_int(text: str, field: str, line: int | None, *, allow_hex: bool = False) -> int:
    try:
        if allow_hex and text.lower().startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)
    except ValueError:
        raise DispatcherConfigError(f"{text!r} is not an integer", line=line, field=field) from None


def _build(
    line: int | None, setid: int, uri: str, flags: int, priority: int, attrs: str
) -> Destination:
    try:
        return Destination.build(setid, uri, flags, priority, attrs)
    except DispatcherConfigError as exc:
        raise DispatcherConfigError(exc.reason, line=line, field=exc.field) from None


def parse_list_file(text: str) -> list[Destination]:
    """Parse Kamailio list-file text, in file order.

    Raises:
        DispatcherConfigError: ``.line`` is the 1-based line number, ``.field`` the column.
    """
    out: list[Destination] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        # ds_load_list stops the setid, URI, flags and priority scans at '#' (rest of the line
        # is a comment); attrs run to the next blank, '#' included; text after attrs is ignored
        # by Kamailio, and here only allowed as a '#' comment.
        cut: list[str] = []
        for item in raw.split():
            if len(cut) < 4 and "#" in item:
                head = item.split("#", 1)[0]
                if head:
                    cut.append(head)
                break
            if len(cut) == 5 and item.startswith("#"):
                break
            cut.append(item)
        if not cut:
            continue
        if len(cut) < 2:
            raise DispatcherConfigError("missing destination", line=number, field="destination")
        if len(cut) > 5:
            raise DispatcherConfigError(
                f"unexpected text {' '.join(cut[5:])!r} after attrs", line=number, field="attrs"
            )
        setid = _parse_int(cut[0], "setid", number)
        flags = _parse_int(cut[2], "flags", number, allow_hex=True) if len(cut) > 2 else 0
        priority = _parse_int(cut[3], "priority", number) if len(cut) > 3 else 0
        attrs = cut[4] if len(cut) > 4 else ""
        out.append(_build(number, setid, cut[1], flags, priority, attrs))
    return out


def _int_value(value: object, field: str, line: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise DispatcherConfigError(f"{value!r} is not an integer", line=line, field=field)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return _parse_int(value.strip(), field, line, allow_hex=field == "flags")
    raise DispatcherConfigError(f"{value!r} is not an integer", line=line, field=field)


def _str_value(value: object, field: str, line: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise DispatcherConfigError(f"{value!r} is not a string", line=line, field=field)


def _attrs_value(value: object, line: int) -> str:
    """attrs as a string, or a mapping rendered as ``k=v;k2=v2`` (router config convenience)."""
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            if (
                not isinstance(key, str)
                or not isinstance(item, str | int)
                or isinstance(item, bool)
            ):
                raise DispatcherConfigError(f"bad attribute {key!r}", line=line, field="attrs")
            parts.append(f"{key}={item}")
        return ";".join(parts)
    return _str_value(value, "attrs", line)


_COLUMNS = ("setid", "destination", "flags", "priority", "attrs", "description", "id")


def parse_rows(rows: Iterable[Mapping[str, object]]) -> list[Destination]:
    """Build destinations from DB rows or router-config dicts (keys as the DB columns).

    ``setid`` and ``destination`` are required; ``flags``/``priority`` default 0, ``attrs``
    may be None/absent, a string, or (config only) a mapping; ``description`` and ``id``
    are accepted and ignored. ``uri`` is accepted as an alias of ``destination``.

    Raises:
        DispatcherConfigError: ``.line`` is the 1-based row number, ``.field`` the column.
    """
    out: list[Destination] = []
    for number, row in enumerate(rows, start=1):
        row = dict(row)
        if "uri" in row and "destination" not in row:
            row["destination"] = row.pop("uri")
        unknown = sorted(set(row) - set(_COLUMNS))
        if unknown:
            raise DispatcherConfigError(
                f"unknown column {unknown[0]!r}", line=number, field=unknown[0]
            )
        if "setid" not in row:
            raise DispatcherConfigError("missing setid", line=number, field="setid")
        setid = _int_value(row["setid"], "setid", number, 0)
        uri = _str_value(row.get("destination"), "destination", number)
        if not uri:
            raise DispatcherConfigError("missing destination", line=number, field="destination")
        flags = _int_value(row.get("flags"), "flags", number, 0)
        priority = _int_value(row.get("priority"), "priority", number, 0)
        attrs = _attrs_value(row.get("attrs"), number)
        out.append(_build(number, setid, uri, flags, priority, attrs))
    return out


def order_set(loaded: Iterable[Destination]) -> list[Destination]:
    """Order one set's destinations exactly as Kamailio keeps them in memory.

    ``add_dest2list`` inserts each new entry into a linked list kept in *ascending* priority,
    after every entry of lower or equal priority ("highest priority last -> reindex will copy
    backwards"); ``reindex_dests`` then copies the list into the array backwards. Result:
    priority descending, and among equal priorities the later-loaded entry first.
    """
    indexed = list(enumerate(loaded))
    indexed.sort(key=lambda pair: (pair[1].priority, pair[0]), reverse=True)
    return [dest for _, dest in indexed]
