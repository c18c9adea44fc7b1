"""What the node's log may hold: never a secret, even in a traceback.

structlog's console renderer prints each frame's local variables when rich is installed
(rich is in the dev extras, so these tests run with it): a pre-auth key held in a local
variable of the function that failed must not reach the log.
"""

from __future__ import annotations

import io

import pytest

from wgpy import log

SECRET = "wgpy_auth_1_s3cr3tdonotlogthis"


def _register(auth_key: str) -> None:
    body = {"auth_key": auth_key}
    raise ConnectionError(f"cannot reach the server ({len(body)} fields)")


@pytest.mark.parametrize("json", [False, True])
def test_a_logged_exception_never_shows_a_secret_local(json: bool) -> None:
    pytest.importorskip("rich")  # the dev extras install it; the danger is with it
    stream = io.StringIO()
    try:
        log.configure("info", stream=stream, json=json)
        logger = log.get_logger(component="mesh")
        try:
            _register(SECRET)
        except ConnectionError:
            logger.exception("registration failed")
    finally:
        log.configure("error")
    text = stream.getvalue()
    assert "registration failed" in text and "ConnectionError" in text
    assert "_register" in text  # a traceback, with its frames
    assert SECRET not in text
    assert "s3cr3t" not in text
