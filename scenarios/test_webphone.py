"""A browser phone through the router: SIP over secure WebSocket (RFC 7118) from headless Chromium.

Topology (own lab): the default one with ``router.web = true``: the reference router also takes
TLS on 5061 and WSS on 8443 with a certificate of the lab CA made in ``<run>/certs``. The page is
the lab's web phone (``lab/webphone``, SIP.js from npm, stub media), served on 127.0.0.1 and
driven with Selenium through Debian's chromium-driver. Chromium trusts the router's certificate
by its public key (``--ignore-certificate-errors-spki-list``), the lab CA is not installed in
a system store.

The phone registers with digest; it calls 600 on an emulator node (answered, then hung up by
the browser); then a call for the phone's user enters the router, is dispatched to a PBX node,
whose Dial(PJSIP/<user>) follows the forwarded registration's Path back to the router, which
sends it over the phone's own WebSocket. A failed test leaves a screenshot in the run folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.backends.render import WSS_PORT
from lab.pytest_plugin import Lab, LabSpec
from lab.webphone.__main__ import spki_sha256
from router.sip import (
    Headers,
    Request,
    Response,
    new_branch,
    parse_contact_list,
    parse_untrusted,
    serialize,
)

USER = "150"
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec:
    # No fault relays: a node whose dispatcher address were its relay would call the phone
    # from an address the router does not know as a node (ds_is_from_list() false).
    return LabSpec({"router": {"web": True}}, faults=[])


def _need(what: str, found: bool) -> None:
    if found:
        return
    if os.environ.get("CI") == "true" or os.environ.get("SIPLAB_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{what} missing (scripts/setup.sh installs it)")
    pytest.skip(f"{what} missing (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def browser(module_lab: Lab) -> Iterator[Any]:
    _need("chromedriver (Debian chromium-driver)", shutil.which("chromedriver") is not None)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium (PyPI)", False)
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        f"--ignore-certificate-errors-spki-list={spki_sha256(module_lab.run_dir / 'certs' / 'router.pem')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(module_lab: Lab, browser: Any) -> Iterator[Any]:
    from lab.webphone import WebPhoneMissing, serve_webphone

    try:
        server = serve_webphone()
    except WebPhoneMissing as exc:
        _need(str(exc), False)
        raise
    try:
        yield server
    finally:
        server.close()


def _until(
    lab: Lab, browser: Any, check: Callable[[], bool], what: str, timeout: float = 15.0
) -> None:
    """Poll the page (Selenium has no push); on timeout save a screenshot and the event list."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    shot = lab.run_dir / f"webphone-{what.replace(' ', '_')}.png"
    browser.save_screenshot(str(shot))
    events = browser.execute_script("return window.phone && window.phone.events")
    pytest.fail(f"web phone: {what} not seen in {timeout} s; events {events}; screenshot {shot}")


def _events(browser: Any) -> list[str]:
    return list(browser.execute_script("return window.phone.events") or [])


def _invite_for_user(lab: Lab, sock: socket.socket, call_id: str) -> Request:
    host, port = sock.getsockname()[:2]
    sdp = (
        f"v=0\r\no=caller 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        "m=audio 40100 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()
    return Request(
        "INVITE",
        f"sip:{USER}@{lab.domain}",
        Headers(
            [
                ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:199@{lab.domain}>;tag=caller1"),
                ("To", f"<sip:{USER}@{lab.domain}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:199@{host}:{port}>"),
                ("Content-Type", "application/sdp"),
            ]
        ),
        sdp,
    )


def test_browser_registers_calls_600_and_receives_a_call_from_a_pbx(
    lab: Lab, browser: Any, page: Any
) -> None:
    router = lab.router.host
    browser.get(
        page.url(
            server=f"wss://{router}:{WSS_PORT}",
            domain=lab.domain,
            user=USER,
            password=lab.password(USER),
            autostart="1",
        )
    )
    state = lambda: browser.execute_script("return window.phone && window.phone.state")  # noqa: E731
    _until(lab, browser, lambda: state() == "registered", "registered")
    with lab.db() as db:
        contacts = [b.contact for b in db.location_lookup(USER, None, time.time())]
    assert len(contacts) == 1 and ".invalid" in contacts[0] and "transport=ws" in contacts[0]

    # Outgoing: the browser calls 600 (an emulator node answers), then hangs up.
    browser.execute_script("window.phone.call('600')")
    _until(lab, browser, lambda: "established: to 600" in _events(browser), "600 answered")
    browser.execute_script("window.phone.hangup()")
    _until(lab, browser, lambda: "terminated: to 600" in _events(browser), "600 hung up")

    # Incoming: a call for the browser's user goes router -> PBX node -> Dial -> router -> WSS,
    # once the forwarded registration is in the nodes' shared ps_contacts (with the Path).
    def forwarded() -> bool:
        with lab.db() as db:
            rows = db.contacts_for_aor(USER, time.time())
        return bool(rows) and all(r.path and router in r.path for r in rows)

    _until(lab, browser, forwarded, "forwarded registration")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        invite = _invite_for_user(lab, sock, "webphone-in-1")
        sock.sendto(serialize(invite), lab.entry(relayed=False))
        final: Response | None = None
        deadline = time.monotonic() + 15
        while final is None and time.monotonic() < deadline:
            try:
                msg = parse_untrusted(sock.recvfrom(65535)[0])
            except TimeoutError:
                continue
            if isinstance(msg, Response) and msg.status >= 200:
                final = msg
        assert final is not None and final.status == 200, final
        _until(lab, browser, lambda: "established: incoming" in _events(browser), "answered")
        assert any(e.startswith("incoming: sip:199@") for e in _events(browser))
        # The caller ends the call: ACK and BYE follow the Record-Route set to the browser.
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            sock.sendto(
                serialize(_in_dialog(invite, final, method, cseq, sock.getsockname()[:2])),
                lab.entry(relayed=False),
            )
        _until(lab, browser, lambda: "terminated: incoming" in _events(browser), "BYE")


def _in_dialog(
    invite: Request, final: Response, method: str, cseq: int, local: tuple[str, int]
) -> Request:
    """ACK or BYE of the caller (RFC 3261 §12.2.1.1): to the remote target, with the route set
    = Record-Route reversed; both are new transactions (an ACK for 2xx too, §13.2.2.4)."""
    (contact,) = parse_contact_list(final.headers.get("contact") or "")
    headers = [
        ("Via", f"SIP/2.0/UDP {local[0]}:{local[1]};branch={new_branch()};rport"),
        *[("Route", r) for r in reversed(final.headers.values("record-route"))],
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("from") or ""),
        ("To", final.headers.get("to") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{cseq} {method}"),
    ]
    return Request(method, str(contact.uri), Headers(headers))
