"""`wgpy genkey`, `genpsk` and `pubkey`, in-process and as the installed command, checked
against the real `wg` (wireguard-tools), plus the key encodings in wgpy.keys."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgpy import keys
from wgpy.cli import Environment, ExitStatus, main
from wgpy.protocol import crypto

WG = shutil.which("wg")
needs_wg = pytest.mark.skipif(WG is None, reason="wireguard-tools (`wg`) is not installed")

WGPY = Path(sys.executable).parent / "wgpy"
needs_wgpy = pytest.mark.skipif(not WGPY.exists(), reason="the wgpy script is not installed")

BASE64_KEY_LINE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n")
ERROR_PREFIX = "wgpy pubkey: the input is not a valid WireGuard key: "

# RFC 7748 section 6.1: Alice's private and public X25519 keys.
RFC_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
KEY = base64.b64encode(RFC_PRIVATE)  # b"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
PUB = base64.b64encode(RFC_PUBLIC) + b"\n"
# A key whose base64 has both '+' and '/', for the URL-safe alphabet case.
PLUS_SLASH = base64.b64encode(bytes([0xFB, 0xFF] + [0] * 30))
assert b"+" in PLUS_SLASH and b"/" in PLUS_SLASH


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def run_main(*argv: str, stdin: bytes = b"", rng: crypto.Rng = os.urandom) -> Result:
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.BytesIO(stdin), stdout=stdout, stderr=stderr, env={}, rng=rng)
    status = main(list(argv), env)
    return Result(status, stdout.getvalue(), stderr.getvalue())


def run_exe(*command: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(c) for c in command], input=stdin, capture_output=True, timeout=30, check=False
    )


def run_wgpy(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return run_exe(WGPY, *argv, stdin=stdin)


def run_wg(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert WG is not None
    return run_exe(WG, *argv, stdin=stdin)


def is_clamped(key: bytes) -> bool:
    return key[0] & 7 == 0 and key[31] & 0x80 == 0 and key[31] & 0x40 != 0


def assert_one_sentence_error(result: Result) -> None:
    assert result.status == ExitStatus.ERROR
    assert result.stdout == ""
    assert result.stderr.startswith(ERROR_PREFIX), result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr


# --- wgpy.keys ---------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
def test_keys_round_trip(key: bytes) -> None:
    text = keys.key_to_base64(key)
    assert text == base64.b64encode(key).decode()
    assert keys.key_from_base64(text) == key
    hex_text = keys.key_to_hex(key)
    assert hex_text == key.hex() and hex_text == hex_text.lower()
    assert keys.key_from_hex(hex_text) == key
    assert keys.key_from_hex(hex_text.upper()) == key


@pytest.mark.parametrize("n", [0, 1, 31, 33, 64])
def test_keys_encode_rejects_wrong_length(n: int) -> None:
    with pytest.raises(ValueError, match=f"expected a key of 32 bytes, got {n}$"):
        keys.key_to_base64(bytes(n))
    with pytest.raises(ValueError, match=f"expected a key of 32 bytes, got {n}$"):
        keys.key_to_hex(bytes(n))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 44 characters of base64 encoding 32 bytes, got none"),
        (KEY.decode()[:43], "expected 44 characters of base64 encoding 32 bytes, got 43"),
        (KEY.decode() + "=", "got 45"),
        (KEY.decode() + "\n", "got 45"),
        (base64.b64encode(bytes(33)).decode(), "ending in '=', but the last one is 'A'"),
        (" " + KEY.decode()[1:], r"but character 1 is ' '"),
        (KEY.decode()[:10] + "\n" + KEY.decode()[11:], r"but character 11 is '\\n'"),
        (PLUS_SLASH.decode().replace("+", "-"), r"but character \d+ is '-'"),
        (KEY.decode()[:20] + "=" + KEY.decode()[21:], r"but character 21 is '='"),
        (KEY.decode()[:20] + "é" + KEY.decode()[21:], r"but character 21 is 'é'"),
        (KEY.decode()[:43] + "A", r"ending in '=', but the last one is 'A'"),
        (KEY.decode()[:42] + "p=", r"character 43 is 'p', which sets padding bits"),
        ("A" * 42 + "B=", r"character 43 is 'B', which sets padding bits"),
    ],
)
def test_keys_from_base64_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        keys.key_from_base64(text)


def test_keys_from_base64_padding_bits() -> None:
    # Of the 64 possible 43rd characters exactly the 16 with two zero low bits are canonical.
    accepted = []
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/":
        try:
            keys.key_from_base64("A" * 42 + c + "=")
        except ValueError:
            continue
        accepted.append(c)
    assert "".join(accepted) == "AEIMQUYcgkosw048"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 64 hexadecimal digits encoding 32 bytes, got none"),
        ("ab" * 31, "got 62"),
        ("ab" * 33, "got 66"),
        ("0x" + "ab" * 31, r"but character 2 is 'x'"),
        (" " + "ab" * 31 + "a", r"but character 1 is ' '"),
        ("ab" * 31 + "a\n", r"but character 64 is '\\n'"),
        ("g" + "a" * 63, r"but character 1 is 'g'"),
        ("٣" + "a" * 63, r"but character 1 is '٣'"),  # a Unicode digit
    ],
)
def test_keys_from_hex_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        keys.key_from_hex(text)


# --- in-process ----------------------------------------------------------------------------


def test_genkey_prints_a_clamped_key() -> None:
    result = run_main("genkey")
    assert result.status == ExitStatus.SUCCESS and result.stderr == ""
    assert BASE64_KEY_LINE.fullmatch(result.stdout)
    assert is_clamped(keys.key_from_base64(result.stdout.strip()))


@pytest.mark.parametrize(
    ("fill", "clamped"),
    [(0x00, bytes(31) + b"\x40"), (0xFF, b"\xf8" + b"\xff" * 30 + b"\x7f")],
)
def test_genkey_clamps_the_random_bytes(fill: int, clamped: bytes) -> None:
    result = run_main("genkey", rng=lambda n: bytes([fill]) * n)
    assert result.stdout == keys.key_to_base64(clamped) + "\n"


def test_genpsk_prints_32_unclamped_random_bytes() -> None:
    result = run_main("genpsk", rng=lambda n: b"\xff" * n)
    assert result.status == ExitStatus.SUCCESS and result.stderr == ""
    assert result.stdout == keys.key_to_base64(b"\xff" * 32) + "\n"
    random_psk = run_main("genpsk").stdout
    assert BASE64_KEY_LINE.fullmatch(random_psk)
    assert random_psk != run_main("genpsk").stdout


def test_pubkey_rfc7748_vector() -> None:
    result = run_main("pubkey", stdin=KEY + b"\n")
    assert result == Result(ExitStatus.SUCCESS, PUB.decode(), "")


def test_pubkey_of_generated_key() -> None:
    private = run_main("genkey").stdout
    public = run_main("pubkey", stdin=private.encode()).stdout.strip()
    assert keys.key_from_base64(public) == crypto.public_key(keys.key_from_base64(private.strip()))


def test_pubkey_error_message() -> None:
    result = run_main("pubkey", stdin=KEY[:43] + b"\n")
    assert_one_sentence_error(result)
    assert result.stderr == ERROR_PREFIX + (
        "expected 44 characters of base64 encoding 32 bytes, got 43\n"
    )
    leading = run_main("pubkey", stdin=b" " + KEY + b"\n")
    assert_one_sentence_error(leading)
    assert "whitespace before or inside the key" in leading.stderr


def test_genkey_warns_about_world_accessible_file(tmp_path: Path) -> None:
    for command in ("genkey", "genpsk"):
        for mode, warns in ((0o644, True), (0o640, False), (0o600, False)):
            path = tmp_path / f"{command}-{mode:o}"
            path.touch()
            path.chmod(mode)
            stderr = io.StringIO()
            with path.open("w") as stdout:
                env = Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr)
                assert main([command], env) == ExitStatus.SUCCESS
            assert BASE64_KEY_LINE.fullmatch(path.read_text())
            if warns:
                assert stderr.getvalue() == (
                    f"wgpy {command}: warning: writing a secret key to a world-accessible "
                    "file; consider setting the umask to 077 and trying again\n"
                )
            else:
                assert stderr.getvalue() == ""


@pytest.mark.parametrize(
    ("argv", "status", "stream", "text"),
    [
        ([], ExitStatus.USAGE, "stderr", "the following arguments are required: COMMAND"),
        (["nope"], ExitStatus.USAGE, "stderr", "invalid choice: 'nope'"),
        (["genkey", "extra"], ExitStatus.USAGE, "stderr", "unrecognized arguments: extra"),
        (["pubkey", "extra"], ExitStatus.USAGE, "stderr", "unrecognized arguments: extra"),
        (["--help"], ExitStatus.SUCCESS, "stdout", "genkey"),
        (["pubkey", "--help"], ExitStatus.SUCCESS, "stdout", "like `wg pubkey`"),
        (["--version"], ExitStatus.SUCCESS, "stdout", "wgpy 0.1.0"),
    ],
)
def test_usage(argv: list[str], status: ExitStatus, stream: str, text: str) -> None:
    result = run_main(*argv)
    assert result.status == status
    assert text in getattr(result, stream)
    assert getattr(result, "stdout" if stream == "stderr" else "stderr") == ""


class _Raising(io.RawIOBase):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise self.error

    def write(self, data: object) -> int:
        raise self.error


def test_interrupted_while_reading_stdin() -> None:
    stdin = io.BufferedReader(_Raising(KeyboardInterrupt()))
    env = Environment(stdin=stdin, stdout=io.StringIO(), stderr=io.StringIO())
    assert main(["pubkey"], env) == ExitStatus.INTERRUPTED


def test_write_error_is_reported() -> None:
    stdout = io.TextIOWrapper(io.BufferedWriter(_Raising(OSError(28, "No space left on device"))))
    stderr = io.StringIO()
    env = Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr)
    assert main(["genkey"], env) == ExitStatus.ERROR
    assert stderr.getvalue() == "wgpy genkey: No space left on device\n"


def test_pubkey_reads_past_long_blank_tail() -> None:
    assert run_main("pubkey", stdin=KEY + b" " * 100_000 + b"\n").stdout == PUB.decode()
    assert_one_sentence_error(run_main("pubkey", stdin=KEY + b" " * 100_000 + b"x"))
    assert_one_sentence_error(run_main("pubkey", stdin=os.urandom(1_000_000)))


# --- what `wg pubkey` accepts, and wgpy with it --------------------------------------------

ACCEPTED = {
    "key": KEY,
    "newline": KEY + b"\n",
    "crlf": KEY + b"\r\n",
    "blank lines": KEY + b"\n\n\n",
    "trailing spaces": KEY + b"   ",
    "trailing tab": KEY + b"\t",
    "trailing vt ff": KEY + b"\v\f\n",
    "trailing nul": KEY + b"\0\0\n",
    "long blank tail": KEY + b" \n" * 5000,
    "all-zero key": b"A" * 43 + b"=\n",
    "all-ff key": base64.b64encode(b"\xff" * 32) + b"\n",
    "plus and slash": PLUS_SLASH + b"\n",
}
REJECTED = {
    "empty": b"",
    "newline only": b"\n",
    "43 chars": KEY[:43],
    "43 chars and newline": KEY[:43] + b"\n",
    "42 chars and ==": KEY[:42] + b"==",
    "45 chars": KEY + b"=",
    "leading space": b" " + KEY,
    "leading tab": b"\t" + KEY + b"\n",
    "leading newline": b"\n" + KEY + b"\n",
    "space inside": KEY[:10] + b" " + KEY[10:],
    "two keys": KEY + b"\n" + KEY + b"\n",
    "garbage line": KEY + b"\nx\n",
    "nul then garbage": KEY + b"\0x",
    "trailing nbsp": KEY + b"\xa0",
    "trailing utf-8 nbsp": KEY + "\u00a0".encode(),
    "non-ascii inside": KEY[:20] + "é".encode() + KEY[22:],
    "url-safe alphabet": PLUS_SLASH.replace(b"+", b"-").replace(b"/", b"_"),
    "no padding char": KEY[:43] + b"A",
    "nonzero padding bits": KEY[:42] + b"p=",
    "nonzero padding bits B": b"A" * 42 + b"B=",
    "nul inside": KEY[:10] + b"\0" + KEY[11:],
    "padding in the middle": KEY[:20] + b"=" + KEY[21:],
    "hex key": RFC_PRIVATE.hex().encode() + b"\n",
    "33 bytes": base64.b64encode(bytes(33)),
    "31 bytes": base64.b64encode(bytes(31)) + b"\n",
}
assert KEY[42:] == b"o="  # 'o' is canonical there; 'p' (one more) sets a padding bit


@pytest.mark.parametrize("stdin", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_pubkey_accepts(stdin: bytes) -> None:
    expected = keys.key_to_base64(crypto.public_key(keys.key_from_base64(stdin[:44].decode())))
    assert run_main("pubkey", stdin=stdin) == Result(ExitStatus.SUCCESS, expected + "\n", "")


@pytest.mark.parametrize("stdin", REJECTED.values(), ids=REJECTED.keys())
def test_pubkey_rejects(stdin: bytes) -> None:
    assert_one_sentence_error(run_main("pubkey", stdin=stdin))


@needs_wg
@pytest.mark.parametrize(
    ("stdin", "accepted"),
    [(v, True) for v in ACCEPTED.values()] + [(v, False) for v in REJECTED.values()],
    ids=[f"accepts {k}" for k in ACCEPTED] + [f"rejects {k}" for k in REJECTED],
)
def test_wg_pubkey_agrees(stdin: bytes, accepted: bool) -> None:
    wg = run_wg("pubkey", stdin=stdin)
    assert (wg.returncode == 0) == accepted, wg.stderr
    ours = run_main("pubkey", stdin=stdin)
    assert ours.stdout == wg.stdout.decode()
    assert (ours.status == ExitStatus.SUCCESS) == accepted


def _mutated_key_inputs() -> st.SearchStrategy[bytes]:
    """Inputs near a valid key: blanks around it, a character replaced, inserted or deleted."""
    blank = st.sampled_from([b"\0", b"\t", b"\n", b"\v", b"\f", b"\r", b" ", b"\xa0", b"x"])
    blanks = st.lists(blank, max_size=4).map(b"".join)

    @st.composite
    def inputs(draw: st.DrawFn) -> bytes:
        key = bytearray(base64.b64encode(draw(st.binary(min_size=32, max_size=32))))
        for _ in range(draw(st.integers(0, 2))):
            i = draw(st.integers(0, len(key)))
            op = draw(st.sampled_from(["replace", "insert", "delete"]))
            char = draw(st.sampled_from(b"AEBp+/-_= \n\0\xc3=")).to_bytes(1, "big")
            if op == "replace" and i < len(key):
                key[i : i + 1] = char
            elif op == "insert":
                key[i:i] = char
            elif i < len(key):
                del key[i]
        return draw(blanks) + bytes(key) + draw(blanks)

    return inputs()


@needs_wg
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_key_inputs())
def test_wg_pubkey_agrees_on_mutated_keys(stdin: bytes) -> None:
    wg = run_wg("pubkey", stdin=stdin)
    ours = run_main("pubkey", stdin=stdin)
    assert ours.stdout == wg.stdout.decode()
    if wg.returncode == 0:
        assert ours.status == ExitStatus.SUCCESS and ours.stderr == ""
    else:
        assert_one_sentence_error(ours)


# --- the installed command, against `wg` ---------------------------------------------------


@needs_wgpy
@needs_wg
def test_wg_genkey_keys_give_the_same_public_key() -> None:
    for _ in range(5):
        private = run_wg("genkey").stdout
        ours = run_wgpy("pubkey", stdin=private)
        assert ours.returncode == 0 and ours.stderr == b""
        assert ours.stdout == run_wg("pubkey", stdin=private).stdout
        assert BASE64_KEY_LINE.fullmatch(ours.stdout.decode())


@needs_wgpy
@needs_wg
def test_wgpy_genkey_keys_are_clamped_and_accepted_by_wg() -> None:
    seen = set()
    for _ in range(5):
        made = run_wgpy("genkey")
        assert made.returncode == 0 and made.stderr == b""
        assert BASE64_KEY_LINE.fullmatch(made.stdout.decode())
        assert is_clamped(keys.key_from_base64(made.stdout.decode().strip()))
        wg = run_wg("pubkey", stdin=made.stdout)
        assert wg.returncode == 0, wg.stderr
        assert wg.stdout == run_wgpy("pubkey", stdin=made.stdout).stdout
        seen.add(made.stdout)
    assert len(seen) == 5


@needs_wgpy
@needs_wg
def test_genpsk_like_wg() -> None:
    ours, theirs = run_wgpy("genpsk"), run_wg("genpsk")
    assert ours.returncode == theirs.returncode == 0
    for out in (ours.stdout, theirs.stdout):
        assert BASE64_KEY_LINE.fullmatch(out.decode())
        assert len(base64.b64decode(out.rstrip(b"\n"), validate=True)) == 32


@needs_wgpy
@needs_wg
@pytest.mark.parametrize("name", ["43 chars and newline", "nonzero padding bits", "two keys"])
def test_installed_wgpy_rejects_like_wg(name: str) -> None:
    stdin = REJECTED[name]
    wg = run_wg("pubkey", stdin=stdin)
    ours = run_wgpy("pubkey", stdin=stdin)
    assert wg.returncode == ours.returncode == 1
    assert ours.stdout == b""
    assert ours.stderr.startswith(ERROR_PREFIX.encode()) and ours.stderr.count(b"\n") == 1


@needs_wgpy
def test_installed_wgpy_basics() -> None:
    assert run_wgpy("pubkey", stdin=KEY + b"\n").stdout == PUB
    usage = run_wgpy()
    assert usage.returncode == ExitStatus.USAGE and b"usage: wgpy" in usage.stderr
    module = run_exe(sys.executable, "-m", "wgpy", "pubkey", stdin=KEY)
    assert module.returncode == 0 and module.stdout == PUB


@needs_wgpy
def test_installed_wgpy_survives_a_closed_pipe() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: writing fails with EPIPE
    try:
        proc = subprocess.run(
            [str(WGPY), "genkey"], stdout=write_end, stderr=subprocess.PIPE, timeout=30
        )
    finally:
        os.close(write_end)
    assert proc.returncode == ExitStatus.ERROR
    assert proc.stderr == b""


@needs_wgpy
def test_installed_wgpy_warns_like_wg(tmp_path: Path) -> None:
    for umask, warns in ((0o022, True), (0o077, False)):
        out = tmp_path / f"key-{umask:o}"
        with out.open("wb") as f:
            os.chmod(out, 0o666 & ~umask)
            proc = subprocess.run([str(WGPY), "genkey"], stdout=f, stderr=subprocess.PIPE)
        assert proc.returncode == 0
        assert (b"world-accessible" in proc.stderr) == warns
        if WG is not None:
            with out.open("wb") as f:
                wg = subprocess.run([WG, "genkey"], stdout=f, stderr=subprocess.PIPE)
            assert (b"world accessible" in wg.stderr) == warns
