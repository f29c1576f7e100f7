"""HTTPS/WSS: an SSL context from a certificate and key, or a self-signed one for development.

Browsers give ``getUserMedia`` only to secure contexts: http://localhost is one, but
http://192.168.1.20:8080 seen from a phone is not. ``tls_self_signed`` makes a certificate
for this machine's names and addresses once (kept in ``tls_self_signed_dir``), so the phone
asks to trust it once and keeps working after restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .config import Config

SELF_SIGNED_DAYS = 365


def local_names() -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) this machine is known by: localhost, its hostname, its
    addresses (the one that routes outwards included)."""
    names = ["localhost"]
    hostname = socket.gethostname()
    if hostname and hostname not in names:
        names.append(hostname)
    addresses = ["127.0.0.1", "::1"]
    try:
        for info in socket.getaddrinfo(hostname, None):
            addr = str(info[4][0])
            if addr not in addresses:
                addresses.append(addr)
    except OSError:
        pass
    try:  # no packet is sent: connect() on UDP only picks the outgoing interface
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
            if addr not in addresses:
                addresses.append(addr)
    except OSError:
        pass
    return names, addresses


def make_self_signed(
    cert_file: Path, key_file: Path, names: list[str], addresses: list[str], days: int = SELF_SIGNED_DAYS
) -> None:
    """Write a self-signed ECDSA P-256 certificate for ``names`` and ``addresses``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "sfu")])
    now = datetime.datetime.now(datetime.UTC)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(ipaddress.ip_address(a.split("%")[0])) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _still_good(cert_file: Path, key_file: Path, names: list[str], addresses: list[str]) -> bool:
    if not cert_file.is_file() or not key_file.is_file():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have_names = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    want_ips = {str(ipaddress.ip_address(a.split("%")[0])) for a in addresses}
    expires = cert.not_valid_after_utc
    fresh = expires - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=7)
    return fresh and set(names) <= have_names and want_ips <= have_ips


def self_signed_files(directory: Path) -> tuple[Path, Path]:
    """The development certificate and key in ``directory``, made or remade when needed."""
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    names, addresses = local_names()
    if not _still_good(cert_file, key_file, names, addresses):
        make_self_signed(cert_file, key_file, names, addresses)
    return cert_file, key_file


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's SSL context, or None when TLS is off."""
    if config.tls_self_signed:
        cert_file, key_file = self_signed_files(config.tls_self_signed_dir)
    elif config.tls_cert_file is not None and config.tls_key_file is not None:
        cert_file, key_file = config.tls_cert_file, config.tls_key_file
    else:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
