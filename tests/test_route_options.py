"""wgpy up's subnet-route options (wgpy/cli/route_options.py): prefixes checked and put in
order, booleans as Tailscale spells them, and the last up's values kept when not given."""

from __future__ import annotations

import argparse

import pytest

from wgpy.cli.route_options import add_route_arguments, boolean, prefixes, route_settings
from wgpy.mesh.client.state import Settings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_route_arguments(parser.add_argument_group("mesh"))
    return parser.parse_args(list(argv))


def test_prefixes_in_order_without_duplicates() -> None:
    assert prefixes("fd00:1::/64, 192.168.1.0/24,10.0.0.0/8,192.168.1.0/24") == (
        "10.0.0.0/8",
        "192.168.1.0/24",
        "fd00:1::/64",
    )
    assert prefixes("") == ()  # --advertise-routes= withdraws them


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("192.168.1.7/24", "has host bits set; advertise 192.168.1.0/24"),
        ("192.168.1.7", "has no prefix length"),
        ("lan", "is not a prefix"),
        ("10.0.0.0/33", "is not a prefix"),
        ("::/0", "is a default route; offer this node as an exit node with --advertise-exit"),
    ],
)
def test_a_wrong_prefix_says_what_to_write(text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        prefixes(text)


def test_booleans() -> None:
    assert [boolean(w) for w in ("true", "False", "on", "0")] == [True, False, True, False]
    with pytest.raises(argparse.ArgumentTypeError, match="neither true nor false"):
        boolean("maybe")
    args = parse("--accept-routes=false", "--snat-subnet-routes")
    assert (args.accept_routes, args.snat_subnet_routes) == (False, True)


def test_given_values_win_and_the_last_up_s_stay() -> None:
    previous = Settings(
        "http://s",
        "wgpy0",
        1,
        "h",
        advertise_routes=("10.0.0.0/8",),
        snat_subnet_routes=False,
        accept_routes=False,
    )
    assert route_settings(parse(), None) == ((), True, True)
    assert route_settings(parse(), previous) == (("10.0.0.0/8",), False, False)
    assert route_settings(parse("--advertise-routes="), previous) == ((), False, False)
    given = parse("--advertise-routes", "192.168.1.0/24", "--accept-routes", "true")
    assert route_settings(given, previous) == (("192.168.1.0/24",), False, True)
    # saved and read back with the other settings
    assert Settings.from_json(
        {
            "server_url": "http://s",
            "interface": "wgpy0",
            "listen_port": 1,
            "hostname": "h",
            "advertise_routes": ["10.0.0.0/8"],
            "accept_routes": False,
        }
    ) == Settings(
        "http://s", "wgpy0", 1, "h", advertise_routes=("10.0.0.0/8",), accept_routes=False
    )
