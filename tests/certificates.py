"""Certificates for TLS tests, made with `cryptography`: a CA (or a self-signed server certificate, its own CA)
and server certificates it signs for given names, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey


def _subject_names(names: list[str]) -> x509.SubjectAlternativeName:
    """DNS names and IP addresses, as a client checks the host it dialled against them."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _builder(common_name: str, issuer: x509.Name, key: Key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def self_signed(common_name: str, names: list[str] | None = None) -> tuple[x509.Certificate, Key]:
    """A CA (`names` None), or a server certificate for `names` that is its own trust anchor."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(common_name, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key)
    if names is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(_subject_names(names), critical=False)
    return builder.sign(key, hashes.SHA256()), key


def issued(ca: tuple[x509.Certificate, Key], common_name: str, names: list[str]) -> tuple[x509.Certificate, Key]:
    """A server certificate for `names` (DNS names or IP addresses), signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(common_name, ca[0].subject, key).add_extension(_subject_names(names), critical=False)
    return builder.sign(ca[1], hashes.SHA256()), key


def write_pem(certfile: Path, made: tuple[x509.Certificate, Key], keyfile: Path | None = None) -> None:
    """The certificate to `certfile`; its private key (PKCS#8, unencrypted) to `keyfile` when given."""
    cert, key = made
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if keyfile is not None:
        pkcs8 = serialization.PrivateFormat.PKCS8
        keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
