"""The lab's certificates: a local CA and node certificates in the run folder (RFC 3261 §26).

``lab_certificates(run_dir, {"router": ["127.240.0.10"]})`` writes ``certs/ca.pem`` (the lab CA,
which the lab's clients trust) and ``certs/<name>.pem`` + ``certs/<name>.key`` for every node,
with the node's IP addresses as subjectAltName (TLS clients here connect to IP literals, and
RFC 5922 §7.2 matches a SIP domain against subjectAltName). The same CA signs client
certificates (``client=True``) for the phones when the router asks for them. Keys are EC P-256:
fast to make, which matters when a storm needs hundreds.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LabCa:
    """A CA that can sign node and client certificates."""

    files: CertFiles
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, folder: Path, name: str = "siplab lab CA", stem: str = "ca") -> LabCa:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        files = _write(folder, stem, cert, key)
        return cls(files, cert, key)

    def issue(
        self,
        folder: Path,
        name: str,
        *,
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        client: bool = False,
    ) -> CertFiles:
        """A certificate for ``name`` (server auth, plus client auth when ``client``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in dns]
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write(folder, name, cert, key)


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertFiles:
    folder.mkdir(parents=True, exist_ok=True)
    cert_path = folder / f"{stem}.pem"
    key_path = folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return CertFiles(cert_path, key_path)


def lab_certificates(
    run_dir: Path, nodes: dict[str, list[str]]
) -> tuple[LabCa, dict[str, CertFiles]]:
    """The lab CA and one certificate per node (name -> its IPs) under ``run_dir/certs``."""
    folder = run_dir / "certs"
    ca = LabCa.create(folder)
    return ca, {
        name: ca.issue(folder, name, ips=tuple(ips), client=True) for name, ips in nodes.items()
    }
