"""The OIDC harness in network namespaces: the OpenID provider runs in one namespace on its veth
address, and a relying party in another finds it by discovery (as the end-to-end login test
will have a provider, a server and nodes in namespaces of their own)."""

from __future__ import annotations

import json

import pytest
from oidc.provider import OidcClient, start_provider

from .netns import PYTHON, Lab

pytestmark = pytest.mark.root

FETCH = """
import json, sys, urllib.request
issuer = sys.argv[1]
with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=10) as r:
    metadata = json.load(r)
with urllib.request.urlopen(metadata["jwks_uri"], timeout=10) as r:
    jwks = json.load(r)
print(json.dumps({"issuer": metadata["issuer"], "kids": [k["kid"] for k in jwks["keys"]]}))
"""


def test_a_provider_in_a_namespace_is_found_by_discovery_from_another(lab: Lab) -> None:
    idp, rp = lab.namespace("idp"), lab.namespace("rp")
    link = lab.veth(idp, rp)
    client = OidcClient.new(f"http://{link.b4}:9/oidc/callback")
    with start_provider(lab.workdir, [client], host=link.a4, wrap=idp.exec_args([])) as provider:
        assert provider.issuer.startswith(f"http://{link.a4}:")
        result = rp.run([PYTHON, "-c", FETCH, provider.issuer], timeout=20)
        seen = json.loads(result.stdout)
        assert seen["issuer"] == provider.issuer
        assert len(seen["kids"]) == 1
    assert idp.pids() == []  # the provider (node itself, not only `ip netns exec`) is gone
