"""The Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s test vector driven through ``wgpy.protocol.noise``.

Source: the cacophony test-vector set, github.com/centromere/cacophony, file
vectors/cacophony.txt (a JSON file; commit e550baf233d044d46fc2b141d21df4478a63425f), the one
entry with "protocol_name": "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s". Its fields are transcribed
below verbatim as hex; ``resp_prologue`` and ``resp_psks`` equal the initiator's and are omitted.

In the vector a handshake message's "ciphertext" is the whole Noise message: for message 0
(-> e, es, s, ss) it is e.pub || ENC(s.pub) || ENC(payload), for message 1 (<- e, ee, se, psk)
it is e.pub || ENC(payload). After the handshake the messages alternate direction, the
initiator sending the even-indexed ones with Split()'s first key and the responder the
odd-indexed ones with the second, each direction's nonce counting up from 0, with empty
associated data.
"""

from __future__ import annotations

import pytest

from wgpy.protocol.constants import CONSTRUCTION
from wgpy.protocol.crypto import aead_decrypt, aead_encrypt, dh, public_key
from wgpy.protocol.noise import (
    initial_state,
    mix_responder_static,
    read_initiation_payload,
    read_initiation_static,
    read_response,
    split,
    write_initiation,
    write_response,
)

h = bytes.fromhex

# centromere/cacophony vectors/cacophony.txt, "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s".
PROTOCOL_NAME = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
INIT_PROLOGUE = h("4a6f686e2047616c74")
INIT_PSKS = [h("54686973206973206d7920417573747269616e20706572737065637469766521")]
INIT_STATIC = h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1")
INIT_EPHEMERAL = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a")
INIT_REMOTE_STATIC = h("31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62")
RESP_STATIC = h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893")
RESP_EPHEMERAL = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")
HANDSHAKE_HASH = h("f5191b875290abcd41347ac3622d9679688a7e980229cb937ef748336cfde0e5")
MESSAGES = [
    (
        h("4c756477696720766f6e204d69736573"),
        h(
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
            "001e21de9f98ddd8e2ad57527207feb56253c9c94a9e496782ecfcb2a75fbcaf"
            "1b52948cc48daefe660c62119ab5000980c84831215f2441eba616548e832985"
            "464cf17e51ee93109008399a21f7e13f"
        ),
    ),
    (
        h("4d757272617920526f746862617264"),
        h(
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
            "cb765f2caef0751b8f007572dab0322217755c0632f365717edbf34d33e87a"
        ),
    ),
    (
        h("462e20412e20486179656b"),
        h("8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7"),
    ),
    (
        h("4361726c204d656e676572"),
        h("07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef"),
    ),
    (
        h("4a65616e2d426170746973746520536179"),
        h("6ab1467c0448cc78394494abaaf23afce0e234315d6e2624dcbfa8a21c1c4d073d"),
    ),
    (
        h("457567656e2042f6686d20766f6e2042617765726b"),
        h("dfc346c0d2296ae6cf1acf6f12b8456a1dba228cf8d8b774aacf1c47fc53aa80ebc7a4c292"),
    ),
]

KEY_LEN = 32
TAG_LEN = 16


def _handshake() -> dict[str, bytes]:
    """Run both sides of the vector's handshake through noise.py and collect the results."""
    psk = INIT_PSKS[0]
    init_static_pub = public_key(INIT_STATIC)
    resp_static_pub = public_key(RESP_STATIC)
    init_ephemeral_pub = public_key(INIT_EPHEMERAL)
    resp_ephemeral_pub = public_key(RESP_EPHEMERAL)

    # <- s (pre-message), on both sides.
    ci, hi = initial_state(INIT_PROLOGUE)
    hi = mix_responder_static(hi, INIT_REMOTE_STATIC)
    cr, hr = initial_state(INIT_PROLOGUE)
    hr = mix_responder_static(hr, resp_static_pub)

    # -> e, es, s, ss: the initiator writes ...
    payload0, _ = MESSAGES[0]
    ci, hi, enc_static, enc_payload0 = write_initiation(
        ci,
        hi,
        static_public=init_static_pub,
        remote_static=INIT_REMOTE_STATIC,
        ephemeral_private=INIT_EPHEMERAL,
        ephemeral_public=init_ephemeral_pub,
        static_static=dh(INIT_STATIC, INIT_REMOTE_STATIC),
        payload=payload0,
    )
    message0 = init_ephemeral_pub + enc_static + enc_payload0

    # ... and the responder reads the vector's bytes.
    _, vector0 = MESSAGES[0]
    re_pub = vector0[:KEY_LEN]
    re_enc_static = vector0[KEY_LEN : KEY_LEN + KEY_LEN + TAG_LEN]
    re_enc_payload = vector0[KEY_LEN + KEY_LEN + TAG_LEN :]
    cr, hr, seen_initiator_static = read_initiation_static(
        cr,
        hr,
        static_private=RESP_STATIC,
        ephemeral_public=re_pub,
        encrypted_static=re_enc_static,
    )
    cr, hr, read_payload0 = read_initiation_payload(
        cr,
        hr,
        static_static=dh(RESP_STATIC, seen_initiator_static),
        encrypted_payload=re_enc_payload,
    )
    after0 = {"ci0": ci, "hi0": hi, "cr0": cr, "hr0": hr}

    # <- e, ee, se, psk: the responder writes ...
    payload1, _ = MESSAGES[1]
    cr, hr, enc_payload1 = write_response(
        cr,
        hr,
        remote_ephemeral=re_pub,
        remote_static=seen_initiator_static,
        ephemeral_private=RESP_EPHEMERAL,
        ephemeral_public=resp_ephemeral_pub,
        preshared_key=psk,
        payload=payload1,
    )
    message1 = resp_ephemeral_pub + enc_payload1

    # ... and the initiator reads the vector's bytes.
    _, vector1 = MESSAGES[1]
    ci, hi, read_payload1 = read_response(
        ci,
        hi,
        static_private=INIT_STATIC,
        ephemeral_private=INIT_EPHEMERAL,
        remote_ephemeral=vector1[:KEY_LEN],
        preshared_key=psk,
        encrypted_payload=vector1[KEY_LEN:],
    )
    return {
        **after0,
        "resp_static_pub": resp_static_pub,
        "message0": message0,
        "message1": message1,
        "seen_initiator_static": seen_initiator_static,
        "init_static_pub": init_static_pub,
        "read_payload0": read_payload0,
        "read_payload1": read_payload1,
        "ci": ci,
        "hi": hi,
        "cr": cr,
        "hr": hr,
    }


@pytest.fixture(scope="module")
def run() -> dict[str, bytes]:
    return _handshake()


def test_vector_matches_wireguard_construction() -> None:
    """The vector is for exactly the protocol name noise.py hashes into its initial state."""
    assert PROTOCOL_NAME == CONSTRUCTION
    assert len(INIT_PSKS) == 1  # psk2: a single pre-shared key, mixed in the second message


def test_vector_keys_are_consistent(run: dict[str, bytes]) -> None:
    """init_remote_static is the responder's static public key."""
    assert run["resp_static_pub"] == INIT_REMOTE_STATIC


def test_message0_initiation(run: dict[str, bytes]) -> None:
    """-> e, es, s, ss: e.pub || ENC(s) || ENC(payload) equals the vector's message 0."""
    _, ciphertext = MESSAGES[0]
    assert len(ciphertext) == KEY_LEN + (KEY_LEN + TAG_LEN) + len(MESSAGES[0][0]) + TAG_LEN
    assert run["message0"] == ciphertext


def test_message0_read_by_responder(run: dict[str, bytes]) -> None:
    """The responder recovers the initiator's static key and message 0's payload; c, h agree."""
    assert run["seen_initiator_static"] == run["init_static_pub"]
    assert run["read_payload0"] == MESSAGES[0][0]
    assert run["cr0"] == run["ci0"]
    assert run["hr0"] == run["hi0"]


def test_message1_response(run: dict[str, bytes]) -> None:
    """<- e, ee, se, psk: e.pub || ENC(payload) equals the vector's message 1."""
    _, ciphertext = MESSAGES[1]
    assert len(ciphertext) == KEY_LEN + len(MESSAGES[1][0]) + TAG_LEN
    assert run["message1"] == ciphertext


def test_message1_read_by_initiator(run: dict[str, bytes]) -> None:
    """The initiator recovers message 1's payload; both chaining keys agree."""
    assert run["read_payload1"] == MESSAGES[1][0]
    assert run["ci"] == run["cr"]


def test_handshake_hash(run: dict[str, bytes]) -> None:
    """Both sides' h after the handshake is the vector's handshake_hash."""
    assert run["hi"] == HANDSHAKE_HASH
    assert run["hr"] == HANDSHAKE_HASH


def test_transport_messages(run: dict[str, bytes]) -> None:
    """Split(): messages 2, 4, ... go initiator->responder with the first key, 3, 5, ... back
    with the second; each direction's nonce counts from 0 and the associated data is empty."""
    initiator_send, initiator_receive = split(run["ci"])
    responder_receive, responder_send = split(run["cr"])
    assert (initiator_send, initiator_receive) == (responder_receive, responder_send)
    assert initiator_send != initiator_receive

    transport = MESSAGES[2:]
    assert len(transport) == 4
    for index, (payload, ciphertext) in enumerate(transport):
        from_initiator = index % 2 == 0
        key = initiator_send if from_initiator else responder_send
        counter = index // 2
        assert aead_encrypt(key, counter, payload, b"") == ciphertext, index + 2
        assert aead_decrypt(key, counter, ciphertext, b"") == payload, index + 2
