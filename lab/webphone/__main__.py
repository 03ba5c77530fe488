"""``python -m lab.webphone [--dir runs/lab] [--port 8090] [--user 100]``: serve the web phone
for a running lab whose topology has ``[router] web = true`` and print the URL to open."""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import time
from pathlib import Path

from lab.webphone import WebPhoneMissing, serve_webphone


def spki_sha256(cert_pem: Path) -> str:
    """Base64 SHA-256 of a certificate's public key (Chromium's
    ``--ignore-certificate-errors-spki-list`` takes it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def main(argv: list[str] | None = None) -> int:
    from lab.backends.render import WSS_PORT
    from lab.labfile import LabFileError, read_labfile
    from lab.topology import load_topology
    from router.configfile import ConfigError

    ap = argparse.ArgumentParser(prog="python -m lab.webphone", description=__doc__)
    ap.add_argument("--dir", default="runs/lab", help="run folder of the lab (lab.json)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--user", default=None, help="provisioned user to fill in (default: first)")
    args = ap.parse_args(argv)
    try:
        lab = read_labfile(args.dir)
        topology = load_topology(lab.topology)
    except (LabFileError, ConfigError) as exc:
        print(f"webphone: {exc}", file=sys.stderr)
        return 2
    if not topology.router.web:
        print(
            f"webphone: {lab.topology}: router.web: the lab router has no WSS listener; "
            "bring the lab up with a topology that says [router] web = true",
            file=sys.stderr,
        )
        return 2
    users = {}
    for line in Path(lab.users_csv).read_text(encoding="utf-8").splitlines()[1:]:
        name, _, rest = line.partition(";")
        if "password=" in rest:
            users[name] = rest[rest.index("password=") + 9 :].rstrip("]")
    user = args.user or next(iter(users), "100")
    router = lab.node("router").host
    try:
        server = serve_webphone(args.host, args.port)
    except (WebPhoneMissing, OSError) as exc:
        print(f"webphone: {exc}", file=sys.stderr)
        return 2
    certs = Path(lab.run_dir) / "certs"
    url = server.url(
        server=f"wss://{router}:{WSS_PORT}",
        domain=topology.users_domain,
        user=user,
        password=users.get(user, ""),
    )
    print(f"web phone: {url}")
    print(f"  the router's certificate is signed by the lab CA {certs / 'ca.pem'}; either import")
    print("  that CA into the browser, or open once and accept the warning:")
    print(f"    https://{router}:{WSS_PORT}/")
    print("  or start Chromium with")
    print(f"    --ignore-certificate-errors-spki-list={spki_sha256(certs / 'router.pem')}")
    print("Ctrl-C stops the page (the lab keeps running).", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
