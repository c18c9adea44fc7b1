"""Machine certificates: an operator's CA, certificates for devices, and the proof that a node
holds its device's key. Sans-IO: no files, no clock, no randomness of its own (time, serial
numbers and keys come in as arguments); shared by the admin CLI (issue), the node (sign) and
the server (verify).

A device's certificate is an X.509 leaf signed directly by the operator's CA: subject CN the
machine's name, not a CA, key usage digitalSignature, extended key usage clientAuth. Keys are
ECDSA P-256 (what this module makes; a CSR may also carry P-384 or Ed25519).

The proof of possession, version 1: the node signs

    PROOF_LABEL || challenge || WireGuard public key (32 raw bytes)

with the device key (ECDSA with SHA-256, DER signature; or Ed25519), where ``challenge`` is
16 to 64 bytes the server chose. The label keeps the signature from meaning anything else.
The server checks, in order: the CA is a CA and valid now; the certificate was signed by it
and is valid now, is not a CA and allows client authentication; its serial is not revoked;
the signature over the message. :func:`sign_proof` and :func:`verify_proof` are the pair.

On the wire (JSON, beside the node's public key and the challenge it answers) the proof is
two fields, :func:`encode_proof` and :func:`decode_proof`: ``"machine_certificate"``, the
certificate in PEM, and ``"machine_signature"``, the signature in standard base64.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
from collections.abc import Container
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CHALLENGE_MAX",
    "CHALLENGE_MIN",
    "PROOF_LABEL",
    "Machine",
    "MachineCertError",
    "PublicKey",
    "SigningKey",
    "certificate_pem",
    "check_ca",
    "check_machine_certificate",
    "check_machine_name",
    "create_ca",
    "create_csr",
    "csr_public_key",
    "decode_proof",
    "encode_proof",
    "issue",
    "load_certificate",
    "load_csr",
    "load_private_key",
    "machine_of",
    "new_private_key",
    "private_key_pem",
    "proof_message",
    "sign_proof",
    "verify_proof",
]

PROOF_LABEL = b"wgpy machine proof v1\x00"
CHALLENGE_MIN = 16
CHALLENGE_MAX = 64
NODE_KEY_LEN = 32
MAX_CERTIFICATE_PEM = 16 * 1024  # characters
MAX_SIGNATURE = 160  # bytes: an ECDSA P-384 DER signature is at most 104, Ed25519 64
MACHINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
_CURVES = (ec.SECP256R1, ec.SECP384R1)


class MachineCertError(ValueError):
    """A certificate, key, request or proof that is refused; the message is one sentence that
    says what is wrong and what to do."""


@dataclass(frozen=True)
class Machine:
    """What a machine certificate says: its name, serial (hex), SHA-256 fingerprint of the
    DER certificate (hex) and validity (Unix seconds)."""

    name: str
    serial: str
    fingerprint: str
    not_before: float
    not_after: float


def check_machine_name(name: str) -> str:
    if not MACHINE_NAME.fullmatch(name):
        raise MachineCertError(
            f"{name[:70]!r} is not a machine name: use 1 to 63 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    return name


# ------------------------------------------------------------------------- keys and files


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 key (from the operating system's randomness, through OpenSSL)."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: SigningKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file holding it must be mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_private_key(data: bytes, what: str = "the key") -> SigningKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise MachineCertError(
            f"{what} is not an unencrypted PEM private key; make one with `wgpy admin ca init` "
            "or `wgpy machine csr`"
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, _CURVES):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise MachineCertError(f"{what} is not an ECDSA P-256/P-384 or Ed25519 key")


def load_certificate(data: bytes, what: str = "the certificate") -> x509.Certificate:
    """The first certificate of a PEM file."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise MachineCertError(f"{what} is not a PEM X.509 certificate") from None


def load_csr(data: bytes, what: str = "the request") -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise MachineCertError(
            f"{what} is not a PEM certificate signing request; make one with `wgpy machine csr`"
        ) from None
    if not csr.is_signature_valid:
        raise MachineCertError(f"{what} has a bad signature (damaged or forged)")
    _check_public_key(csr.public_key(), what)
    return csr


def _check_public_key(key: object, what: str) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise MachineCertError(f"{what} does not hold an ECDSA P-256/P-384 or Ed25519 public key")


def csr_public_key(csr: x509.CertificateSigningRequest) -> PublicKey:
    """The key a request (from :func:`load_csr`) asks a certificate for."""
    return _check_public_key(csr.public_key(), "the request")


def _time(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def _hash_for(key: SigningKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


# ------------------------------------------------------------------------- the CA


def create_ca(
    name: str, *, now: float, lifetime: float, serial: int, key: SigningKey | None = None
) -> tuple[SigningKey, x509.Certificate]:
    """An operator CA: a self-signed certificate that may sign device certificates only
    (path length 0). ``serial``: e.g. ``x509.random_serial_number()``."""
    key = key or new_private_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wgpy machine CA"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(_time(now - 300))
        .not_valid_after(_time(now + lifetime))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _hash_for(key))
    )
    return key, cert


def check_ca(ca: x509.Certificate, now: float) -> None:
    """Refuse a certificate that cannot be a machine CA now."""
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise MachineCertError(
            "the machine CA certificate is not a CA certificate (no basicConstraints CA:TRUE); "
            "give the CA's certificate, not a device's"
        )
    _check_validity(ca, now, "the machine CA certificate")


def _check_validity(cert: x509.Certificate, now: float, what: str) -> None:
    if now < cert.not_valid_before_utc.timestamp():
        raise MachineCertError(
            f"{what} is not valid yet (from {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC); "
            "check the clocks"
        )
    if now > cert.not_valid_after_utc.timestamp():
        raise MachineCertError(
            f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; issue a new one"
        )


# ------------------------------------------------------------------------- devices


def create_csr(key: SigningKey, name: str) -> x509.CertificateSigningRequest:
    """A request for a certificate for machine ``name``, made on the device with its key."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, check_machine_name(name))])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, _hash_for(key))


def issue(
    ca_key: SigningKey,
    ca: x509.Certificate,
    public_key: PublicKey,
    name: str,
    *,
    now: float,
    lifetime: float,
    serial: int,
) -> x509.Certificate:
    """A device certificate for ``public_key`` (from :func:`new_private_key` or a CSR's
    ``public_key()``), signed by the CA. The name is the caller's (an admin's choice), not
    the CSR's subject. It ends no later than the CA."""
    check_machine_name(name)
    _check_public_key(public_key, "the device's key")
    if ca_key.public_key() != ca.public_key():
        raise MachineCertError("the CA key does not belong to the CA certificate")
    check_ca(ca, now)
    not_after = min(now + lifetime, ca.not_valid_after_utc.timestamp())
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        authority = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        ca_public = _check_public_key(ca.public_key(), "the CA certificate")
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(_time(now - 300))
        .not_valid_after(_time(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, _hash_for(ca_key))
    )


def machine_of(cert: x509.Certificate) -> Machine:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else ""
    return Machine(
        name=name,
        serial=format(cert.serial_number, "x"),
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def check_machine_certificate(
    ca: x509.Certificate, cert: x509.Certificate, now: float, revoked: Container[str] = ()
) -> Machine:
    """The machine ``cert`` names, if the CA signed it and it may authenticate a device now;
    ``revoked`` holds revoked serials (hex, as :attr:`Machine.serial`)."""
    check_ca(ca, now)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise MachineCertError(
            "the machine certificate was not issued by this server's machine CA; issue one "
            "with `wgpy admin machines issue`"
        ) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            raise MachineCertError("a CA certificate is not a machine certificate")
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise MachineCertError("the machine certificate does not allow client authentication")
    except x509.ExtensionNotFound:
        raise MachineCertError(
            "the certificate is not a machine certificate (it lacks basicConstraints or "
            "extendedKeyUsage); issue one with `wgpy admin machines issue`"
        ) from None
    _check_public_key(cert.public_key(), "the machine certificate")
    machine = machine_of(cert)
    _check_validity(cert, now, f'the certificate of machine "{machine.name}"')
    if machine.serial in revoked:
        raise MachineCertError(
            f'machine "{machine.name}" (serial {machine.serial}) is revoked; ask an admin for '
            "a new certificate"
        )
    return machine


# ------------------------------------------------------------------------- the proof


def proof_message(challenge: bytes, node_key: bytes) -> bytes:
    """What the device key signs: the label, the server's challenge, the node's WireGuard
    public key (32 raw bytes)."""
    if not CHALLENGE_MIN <= len(challenge) <= CHALLENGE_MAX:
        raise MachineCertError(
            f"the challenge must be {CHALLENGE_MIN} to {CHALLENGE_MAX} bytes, not {len(challenge)}"
        )
    if len(node_key) != NODE_KEY_LEN:
        raise MachineCertError(
            f"the node key must be {NODE_KEY_LEN} bytes (a WireGuard public key), not "
            f"{len(node_key)}"
        )
    return PROOF_LABEL + challenge + node_key


def sign_proof(key: SigningKey, challenge: bytes, node_key: bytes) -> bytes:
    """The node's side: the device key's signature over :func:`proof_message`."""
    message = proof_message(challenge, node_key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_proof(
    ca: x509.Certificate,
    cert: x509.Certificate,
    challenge: bytes,
    node_key: bytes,
    signature: bytes,
    *,
    now: float,
    revoked: Container[str] = (),
) -> Machine:
    """The server's side: the machine the node proved to be, or MachineCertError. The
    caller makes sure ``challenge`` is one it issued, recently, and uses it once."""
    message = proof_message(challenge, node_key)
    machine = check_machine_certificate(ca, cert, now, revoked)
    public = cert.public_key()
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:  # pragma: no cover - refused by check_machine_certificate
            raise InvalidSignature
    except (InvalidSignature, ValueError):
        raise MachineCertError(
            f'the proof of possession does not verify with the key of machine "{machine.name}" '
            "(another key, another challenge or node key, or a damaged signature)"
        ) from None
    return machine


def encode_proof(cert: x509.Certificate, signature: bytes) -> dict[str, str]:
    """The proof's two JSON fields."""
    return {
        "machine_certificate": certificate_pem(cert).decode(),
        "machine_signature": base64.b64encode(signature).decode(),
    }


def decode_proof(certificate: object, signature: object) -> tuple[x509.Certificate, bytes]:
    """The certificate and signature from the proof's two JSON fields (hostile input: sizes
    and forms checked, MachineCertError with a sentence)."""
    if not isinstance(certificate, str) or len(certificate) > MAX_CERTIFICATE_PEM:
        raise MachineCertError(
            f'"machine_certificate" must be a PEM certificate of at most {MAX_CERTIFICATE_PEM} '
            "characters"
        )
    if not isinstance(signature, str) or len(signature) > 4 * MAX_SIGNATURE // 3 + 4:
        raise MachineCertError(
            f'"machine_signature" must be base64 of at most {MAX_SIGNATURE} bytes'
        )
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise MachineCertError('"machine_signature" is not valid base64') from None
    if not raw:
        raise MachineCertError('"machine_signature" is empty')
    try:
        cert = load_certificate(certificate.encode(), '"machine_certificate"')
    except UnicodeEncodeError:
        raise MachineCertError('"machine_certificate" is not a PEM certificate') from None
    return cert, raw
