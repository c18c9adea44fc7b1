"""What every route shares (wgpy/mesh/server/web.py), on its own: replies and errors are JSON
that no cache keeps. The middleware, bodies and credential checks run behind a real server in
test_server_api.py and test_server_hostile.py."""

from __future__ import annotations

import json

from wgpy.mesh.server.web import error_reply, reply


def test_a_reply_is_json_that_no_cache_keeps() -> None:
    response = reply({"node": {"id": 1}}, status=201)
    assert response.status == 201
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.text is not None and json.loads(response.text) == {"node": {"id": 1}}


def test_an_error_is_one_sentence_under_error_with_its_headers() -> None:
    response = error_reply(429, "too many requests; retry in 3 s", {"Retry-After": "3"})
    assert response.status == 429
    assert response.headers["Retry-After"] == "3"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.text is not None
    assert json.loads(response.text) == {"error": "too many requests; retry in 3 s"}
    assert error_reply(404, "no such endpoint").headers["Cache-Control"] == "no-store"
