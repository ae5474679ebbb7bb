"""Certificates of the secure local stack (``bse-predict services up --secure``).

A self-signed CA made on the fly in the stack's ``tls/`` folder and kept across
restarts, and certificates it signs: one server certificate shared by the
broker and Redis (SAN ``localhost`` and ``127.0.0.1``, usable for server and
client authentication, since the broker also dials its own controller with
it), and one client certificate for mTLS. Keys are EC P-256, unencrypted
PKCS#8 PEM, written with mode 0600. Built with the ``cryptography`` package,
so no ``openssl`` or ``keytool`` is needed (docs/dependencies.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["StackCertificates", "certificate_paths", "ensure_certificates", "make_ca", "write_private"]

_CA_DAYS = 3650
_LEAF_DAYS = 397
_RENEW_BEFORE = datetime.timedelta(days=30)
_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class StackCertificates:
    """The PEM files of one stack."""

    ca_cert: Path  # what clients trust (BSE_KAFKA_SSL_CAFILE, BSE_REDIS_SSL_CAFILE)
    ca_key: Path
    server_cert: Path  # the server certificate, then the CA's
    server_key: Path
    server_keystore: Path  # key and chain in one file: Kafka's ssl.keystore.type=PEM
    client_cert: Path  # for mTLS (ssl_certfile)
    client_key: Path  # (ssl_keyfile)


def ensure_certificates(folder: Path) -> StackCertificates:
    """The stack's CA and certificates in ``folder``; each is made when missing, a leaf also when it
    is due to expire within 30 days or is not signed by the CA there (a CA made again)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = certificate_paths(folder)
    if not (files.ca_cert.is_file() and files.ca_key.is_file()):
        cert_pem, key_pem = make_ca("bse-predict local CA")
        write_private(files.ca_key, key_pem)
        files.ca_cert.write_bytes(cert_pem)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    if _needs_leaf(files.server_cert, ca_cert) or not files.server_keystore.is_file():
        cert_pem, key_pem = _leaf(ca_cert, ca_key, "localhost", server=True)
        write_private(files.server_key, key_pem)
        write_private(files.server_keystore, key_pem + cert_pem + files.ca_cert.read_bytes())
        files.server_cert.write_bytes(cert_pem + files.ca_cert.read_bytes())
    if _needs_leaf(files.client_cert, ca_cert):
        cert_pem, key_pem = _leaf(ca_cert, ca_key, "bse-predict client", server=False)
        write_private(files.client_key, key_pem)
        files.client_cert.write_bytes(cert_pem)
    return files


def certificate_paths(folder: Path) -> StackCertificates:
    """Where the files of a stack whose ``tls/`` folder is ``folder`` are (made or not)."""
    return StackCertificates(
        ca_cert=folder / "ca.pem", ca_key=folder / "ca-key.pem",
        server_cert=folder / "server.pem", server_key=folder / "server-key.pem",
        server_keystore=folder / "server-keystore.pem",
        client_cert=folder / "client.pem", client_key=folder / "client-key.pem",
    )


def make_ca(common_name: str) -> tuple[bytes, bytes]:
    """A new self-signed CA: its certificate and its private key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` readable by its owner only (mode 0600), never wider even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
        os.write(fd, raw)
    finally:
        os.close(fd)


def _leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
          *, server: bool) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
    )
    if server:
        names: list[x509.GeneralName] = []
        for host in _HOSTS:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _needs_leaf(cert_path: Path, ca_cert: x509.Certificate) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())  # the first certificate of the file
    except (OSError, ValueError):
        return True
    if cert.issuer != ca_cert.subject:
        return True
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):  # not signed by this CA: make a new one
        return True
    return cert.not_valid_after_utc - _now() < _RENEW_BEFORE


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
