"""wgpy.machinecert: the operator CA, device certificates, CSRs and the proof of possession,
as pure functions (time, serials and keys passed in)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from wgpy import machinecert as mc

NOW = 1_800_000_000.0
DAY = 86400.0
CHALLENGE = bytes(range(32))
NODE_KEY = bytes(range(100, 132))


@pytest.fixture(scope="module")
def ca() -> tuple[mc.SigningKey, x509.Certificate]:
    return mc.create_ca("ops", now=NOW, lifetime=3650 * DAY, serial=1)


@pytest.fixture(scope="module")
def device(
    ca: tuple[mc.SigningKey, x509.Certificate],
) -> tuple[mc.SigningKey, x509.Certificate]:
    ca_key, ca_cert = ca
    key = mc.new_private_key()
    cert = mc.issue(
        ca_key, ca_cert, key.public_key(), "laptop-1", now=NOW, lifetime=DAY, serial=0xABC
    )
    return key, cert


def test_files_round_trip(ca: tuple[mc.SigningKey, x509.Certificate]) -> None:
    key, cert = ca
    assert mc.load_private_key(mc.private_key_pem(key)).public_key() == key.public_key()
    assert mc.load_certificate(mc.certificate_pem(cert)) == cert
    mc.check_ca(cert, NOW)


def test_proof_verifies_and_names_the_machine(
    ca: tuple[mc.SigningKey, x509.Certificate], device: tuple[mc.SigningKey, x509.Certificate]
) -> None:
    key, cert = device
    signature = mc.sign_proof(key, CHALLENGE, NODE_KEY)
    machine = mc.verify_proof(ca[1], cert, CHALLENGE, NODE_KEY, signature, now=NOW + 60)
    assert machine.name == "laptop-1"
    assert machine.serial == "abc"
    assert len(machine.fingerprint) == 64
    assert machine.not_after == pytest.approx(NOW + DAY)


def test_proof_over_other_challenge_node_key_or_damaged_is_refused(
    ca: tuple[mc.SigningKey, x509.Certificate], device: tuple[mc.SigningKey, x509.Certificate]
) -> None:
    key, cert = device
    signature = mc.sign_proof(key, CHALLENGE, NODE_KEY)
    other = bytes(32)
    for challenge, node_key, sig in [
        (other, NODE_KEY, signature),
        (CHALLENGE, other, signature),
        (CHALLENGE, NODE_KEY, signature[:-1] + bytes([signature[-1] ^ 1])),
        (CHALLENGE, NODE_KEY, b""),
        (CHALLENGE, NODE_KEY, mc.sign_proof(mc.new_private_key(), CHALLENGE, NODE_KEY)),
    ]:
        with pytest.raises(mc.MachineCertError, match="does not verify"):
            mc.verify_proof(ca[1], cert, challenge, node_key, sig, now=NOW)


def test_proof_sizes_are_checked(device: tuple[mc.SigningKey, x509.Certificate]) -> None:
    with pytest.raises(mc.MachineCertError, match="challenge must be 16 to 64 bytes, not 8"):
        mc.sign_proof(device[0], bytes(8), NODE_KEY)
    with pytest.raises(mc.MachineCertError, match="node key must be 32 bytes"):
        mc.sign_proof(device[0], CHALLENGE, bytes(31))
    assert mc.proof_message(CHALLENGE, NODE_KEY) == mc.PROOF_LABEL + CHALLENGE + NODE_KEY


def test_expiry_and_not_yet_valid(
    ca: tuple[mc.SigningKey, x509.Certificate], device: tuple[mc.SigningKey, x509.Certificate]
) -> None:
    key, cert = device
    signature = mc.sign_proof(key, CHALLENGE, NODE_KEY)
    with pytest.raises(mc.MachineCertError, match='certificate of machine "laptop-1" expired'):
        mc.verify_proof(ca[1], cert, CHALLENGE, NODE_KEY, signature, now=NOW + DAY + 1)
    with pytest.raises(mc.MachineCertError, match="not valid yet"):
        mc.verify_proof(ca[1], cert, CHALLENGE, NODE_KEY, signature, now=NOW - 3600)
    # a certificate ends no later than its CA
    short_key, short_ca = mc.create_ca("short", now=NOW, lifetime=DAY, serial=2)
    leaf = mc.issue(
        short_key, short_ca, key.public_key(), "x", now=NOW, lifetime=365 * DAY, serial=3
    )
    assert leaf.not_valid_after_utc == short_ca.not_valid_after_utc
    with pytest.raises(mc.MachineCertError, match="machine CA certificate expired"):
        mc.check_machine_certificate(short_ca, leaf, NOW + 2 * DAY)


def test_revoked(
    ca: tuple[mc.SigningKey, x509.Certificate], device: tuple[mc.SigningKey, x509.Certificate]
) -> None:
    key, cert = device
    signature = mc.sign_proof(key, CHALLENGE, NODE_KEY)
    with pytest.raises(mc.MachineCertError, match=r'"laptop-1" \(serial abc\) is revoked'):
        mc.verify_proof(ca[1], cert, CHALLENGE, NODE_KEY, signature, now=NOW, revoked={"abc", "1"})


def test_other_ca_and_ca_as_leaf_are_refused(
    ca: tuple[mc.SigningKey, x509.Certificate], device: tuple[mc.SigningKey, x509.Certificate]
) -> None:
    other_key, other_ca = mc.create_ca("ops", now=NOW, lifetime=DAY, serial=1)  # same name
    with pytest.raises(mc.MachineCertError, match="not issued by this server's machine CA"):
        mc.check_machine_certificate(other_ca, device[1], NOW)
    with pytest.raises(mc.MachineCertError, match="not a CA certificate"):
        mc.check_machine_certificate(device[1], device[1], NOW)
    # the CA itself (self-signed) is not a machine certificate
    with pytest.raises(mc.MachineCertError, match="CA certificate is not a machine"):
        mc.check_machine_certificate(ca[1], ca[1], NOW)
    with pytest.raises(mc.MachineCertError, match="does not belong"):
        mc.issue(other_key, ca[1], device[0].public_key(), "x", now=NOW, lifetime=DAY, serial=5)


def test_csr_made_on_the_device() -> None:
    ca_key, ca_cert = mc.create_ca("ops", now=NOW, lifetime=DAY, serial=1)
    for device_key in (mc.new_private_key(), ed25519.Ed25519PrivateKey.generate()):
        pem = mc.create_csr(device_key, "build-7").public_bytes(serialization.Encoding.PEM)
        public = mc.load_csr(pem).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
        cert = mc.issue(ca_key, ca_cert, public, "build-7", now=NOW, lifetime=DAY, serial=9)
        signature = mc.sign_proof(device_key, CHALLENGE, NODE_KEY)
        machine = mc.verify_proof(ca_cert, cert, CHALLENGE, NODE_KEY, signature, now=NOW)
        assert machine.name == "build-7"


def test_hostile_input_gets_sentences() -> None:
    for junk in (
        b"",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\xff" * 50,
    ):
        with pytest.raises(mc.MachineCertError, match=r"not a PEM X\.509 certificate"):
            mc.load_certificate(junk)
        with pytest.raises(mc.MachineCertError, match="not a PEM certificate signing request"):
            mc.load_csr(junk)
        with pytest.raises(mc.MachineCertError, match="not an unencrypted PEM private key"):
            mc.load_private_key(junk)
    weak = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(mc.MachineCertError, match="not an ECDSA P-256/P-384 or Ed25519"):
        mc.load_private_key(mc.private_key_pem(weak))
    for name in ("", "-x", "a b", "x" * 64, "ü"):
        with pytest.raises(mc.MachineCertError, match="is not a machine name"):
            mc.check_machine_name(name)


def test_wire_fields_round_trip_and_hostile_fields(
    ca: tuple[mc.SigningKey, x509.Certificate], device: tuple[mc.SigningKey, x509.Certificate]
) -> None:
    key, cert = device
    signature = mc.sign_proof(key, CHALLENGE, NODE_KEY)
    fields = mc.encode_proof(cert, signature)
    assert set(fields) == {"machine_certificate", "machine_signature"}
    got_cert, got_signature = mc.decode_proof(
        fields["machine_certificate"], fields["machine_signature"]
    )
    assert (got_cert, got_signature) == (cert, signature)
    mc.verify_proof(ca[1], got_cert, CHALLENGE, NODE_KEY, got_signature, now=NOW)
    pem, sig = fields["machine_certificate"], fields["machine_signature"]
    for certificate, signature_text, message in [
        (None, sig, "must be a PEM certificate"),
        ("x" * 20000, sig, "must be a PEM certificate"),
        (pem, 5, "must be base64"),
        (pem, "A" * 400, "must be base64 of at most 160 bytes"),
        (pem, "not base64!", "not valid base64"),
        (pem, "", "is empty"),
        ("-----BEGIN CERTIFICATE-----\n\u00e9\n", sig, "PEM"),
        ("hello", sig, "PEM"),
    ]:
        with pytest.raises(mc.MachineCertError, match=message):
            mc.decode_proof(certificate, signature_text)


def test_an_existing_ca_without_key_identifier_issues_too() -> None:
    """A CA made by other tools (here: no subjectKeyIdentifier, an Ed25519 key) works."""
    ca_key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(77)
        .not_valid_before(datetime.datetime.fromtimestamp(NOW - 60, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(NOW + DAY, datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, None)
    )
    device_key = mc.new_private_key()
    cert = mc.issue(ca_key, ca, device_key.public_key(), "old-1", now=NOW, lifetime=60, serial=8)
    signature = mc.sign_proof(device_key, CHALLENGE, NODE_KEY)
    assert mc.verify_proof(ca, cert, CHALLENGE, NODE_KEY, signature, now=NOW).name == "old-1"
