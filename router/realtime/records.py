"""Typed rows the store returns and accepts (frozen, slotted).

Field names equal column names, in the order the store selects them, so a row tuple maps
straight onto a record (``Record(*row)``). Each record documents which table it mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UserCredential:
    """A provisioned user, as written to the SIPp injection CSV."""

    username: str
    """Endpoint, AOR, auth id and digest username (all equal)."""
    password: str
    """Plaintext password (ps_auths.password, auth_type userpass)."""
    domain: str
    """SIP domain the user registers to."""


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user as listed by ``siplab users list`` (ps_endpoints joined with ps_auths/ps_aors)."""

    id: str
    context: str | None
    username: str | None
    password: str | None
    realm: str | None
    max_contacts: int | None


@dataclass(frozen=True, slots=True)
class AuthRow:
    """ps_auths: credentials of one auth section."""

    id: str
    auth_type: str | None
    username: str | None
    password: str | None
    md5_cred: str | None
    """MD5 HA1 of ``username:realm:password`` (deprecated in Asterisk, still read)."""
    realm: str | None
    """Empty means Asterisk's global default_realm ("asterisk")."""
    nonce_lifetime: int | None


@dataclass(frozen=True, slots=True)
class AorRow:
    """ps_aors: registration policy of one AOR (NULL = pjsip.conf default)."""

    id: str
    contact: str | None
    """Permanent contact(s), comma-separated."""
    default_expiration: int | None
    max_contacts: int | None
    """0/NULL = registration forbidden (Asterisk answers 403)."""
    minimum_expiration: int | None
    maximum_expiration: int | None
    remove_existing: str | None
    qualify_frequency: int | None
    qualify_timeout: float | None
    support_path: str | None
    outbound_proxy: str | None


@dataclass(frozen=True, slots=True)
class Binding:
    """Kamailio ``location`` row: one registered contact of an AOR.

    ``expires`` and ``last_modified`` are epoch seconds (usrloc ``expires_type=1``); an
    ``expires`` of 0 is a permanent binding.
    """

    ruid: str
    """Unique record id chosen by the registrar (the upsert key)."""
    username: str
    domain: str | None
    """None when the registrar runs with use_domain=0."""
    contact: str
    expires: int
    q: float = -1.0
    """-1 = no q given (usrloc Q_UNSPECIFIED)."""
    callid: str = "Default-Call-ID"
    cseq: int = 1
    last_modified: int = 0
    received: str | None = None
    """Source address URI for NATed contacts (``fix_nated_register``)."""
    path: str | None = None
    """Path header values, comma-separated, as received."""
    flags: int = 0
    cflags: int = 0
    user_agent: str = ""
    socket: str | None = None
    methods: int | None = None
    instance: str | None = None
    reg_id: int = 0
    server_id: int = 0
    connection_id: int = 0
    keepalive: int = 0
    partition: int = 0


@dataclass(frozen=True, slots=True)
class ContactRow:
    """Asterisk ``ps_contacts`` row (a dynamic contact, shared between nodes)."""

    id: str
    """``<aor>;@<md5(uri)>``."""
    uri: str
    expiration_time: int
    """Epoch seconds."""
    endpoint: str | None = None
    reg_server: str = ""
    """System name of the node that accepted the REGISTER ('' for none)."""
    user_agent: str | None = None
    via_addr: str | None = None
    via_port: int | None = None
    call_id: str | None = None
    path: str | None = None
    qualify_frequency: int | None = None
    qualify_timeout: float | None = None
    outbound_proxy: str | None = None
    prune_on_boot: str | None = None
    authenticate_qualify: str | None = None
    qualify_2xx_only: str | None = None

    @property
    def aor(self) -> str:
        """The AOR part of ``id``."""
        return self.id.split(";@", 1)[0]


@dataclass(frozen=True, slots=True)
class QueueRow:
    """Asterisk ``queues`` row (the columns app_queue behaviour depends on)."""

    name: str
    strategy: str | None
    timeout: int | None
    retry: int | None
    wrapuptime: int | None
    ringinuse: str | None
    maxlen: int | None
    weight: int | None
    autofill: str | None
    joinempty: str | None
    leavewhenempty: str | None
    musiconhold: str | None
    context: str | None


@dataclass(frozen=True, slots=True)
class QueueMemberRow:
    """Asterisk ``queue_members`` row."""

    queue_name: str
    interface: str
    """Dialable device, e.g. ``PJSIP/101``."""
    membername: str | None
    state_interface: str | None
    penalty: int | None
    paused: int | None
    uniqueid: int
    wrapuptime: int | None
    ringinuse: str | None
    reason_paused: str | None


@dataclass(frozen=True, slots=True)
class MemberState:
    """siplab ``queue_member_state`` row: the cross-node busy view of one agent device."""

    interface: str
    node: str | None
    """Node holding the call (or that ended the last one)."""
    in_call: bool
    call_id: str | None
    updated: float | None
    last_call_end: float | None


@dataclass(frozen=True, slots=True)
class DispatcherRow:
    """Kamailio ``dispatcher`` row (version 4)."""

    setid: int
    destination: str
    """SIP URI of the destination, e.g. ``sip:127.0.0.11:5060``."""
    flags: int = 0
    priority: int = 0
    attrs: str = ""
    """``name=value;...`` (duid, weight, maxload, ...)."""
    description: str = ""
    id: int | None = None
    """Assigned by the DB; ignored by ``dispatcher_set``."""
