"""``wgpy server``: the mesh coordination server (docs/mesh-api.md).

``wgpy server [--listen HOST:PORT] [--state-dir DIR | --database-url URL] [--tls-cert F ...]
[--stun-listen HOST:PORT|off ...] [--turn URL ... --turn-secret FILE [--turn-ttl SECONDS]]
[--machine-ca CERT] [--key-expiry DURATION|never] [--totp-enrolment sign-in|admin]
[--base-domain DOMAIN] [--dns-domain DOMAIN=ADDRESS[,ADDRESS...] ...]
[--public-url URL] [--metrics-listen HOST:PORT] [--oidc-issuer URL
--oidc-client-id ID --oidc-client-secret FILE [--oidc-allowed-domains D,...]
[--oidc-allowed-users EMAIL,...] [--oidc-allowed-groups G,...] [--oidc-groups-claim NAME]]``
    Serve the API until SIGINT or SIGTERM; print where it listens. Answer STUN Binding
    requests on UDP (default every address, port 3478), and hand nodes short-lived
    credentials for the TURN relays (coturn with use-auth-secret). State lives in SQLite
    (``DIR/wgpy.db``, default /var/lib/wgpy) or, with a ``postgresql://`` URL (or
    ``WGPY_DATABASE_URL``, which keeps a password out of the process list), in PostgreSQL,
    which several replicas can share. With ``--machine-ca`` the server records the machine
    certificates that CA issued (wgpy/machinecert.py). Nodes without an auth key log in
    interactively (a person approves them; they expire after ``--key-expiry``, default 180
    days); ``--totp-enrolment admin`` leaves setting up their TOTP to an admin. With
    ``--oidc-issuer`` people can connect devices by single sign-on through that
    OpenID provider (the redirect URI to register there is ``SERVER/oidc/callback``); the
    allowed lists (each that is given must match) say who may join. Each node's map gives
    every node's DNS name, ``HOST.USER.DOMAIN`` (``--base-domain``, default mesh.internal);
    ``--dns-domain`` adds split DNS domains, each resolved by the resolvers given, through
    every node's resolver.
    With ``--metrics-listen`` it serves Prometheus metrics on that address. Logs go to stderr
    (``LOG_LEVEL``, default info).
``wgpy server apikey create [--expiration SECONDS]``
    Make an admin API key directly in the database (the bootstrap: no server needed) and
    print it, once.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
import signal
from pathlib import Path

from wgpy import log
from wgpy.dns.names import DEFAULT_BASE_DOMAIN, check_base_domain
from wgpy.mesh.client.api import check_server_url
from wgpy.mesh.server import MeshServer, ServerConfig, dns_api, nat, stun
from wgpy.mesh.server.config import (
    DEFAULT_KEY_EXPIRY,
    DEFAULT_MAX_NODES_PER_USER,
    DEFAULT_PORT,
    DEFAULT_STATE_DIR,
    TOTP_ENROLMENT,
    OidcConfig,
)
from wgpy.mesh.server.oidc import DEFAULT_GROUPS_CLAIM, OidcSettings
from wgpy.mesh.server.service import ServerError, create_api_key

from .admin import parse_duration
from .environment import PROG, CommandError, Environment, ExitStatus
from .listen import listen_address

DATABASE_ENV = "WGPY_DATABASE_URL"
API_KEY_DAYS = 90


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``server`` (and ``server apikey create``) to the ``wgpy`` parser."""
    server = commands.add_parser(
        "server",
        help="run the mesh coordination server",
        description="Run the mesh coordination server: nodes register with pre-auth keys and "
        "follow a map of their peers; admins manage users, keys, nodes and the policy.",
    )
    server.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"address and port to serve on (default 127.0.0.1:{DEFAULT_PORT})",
    )
    _add_database_arguments(server, argparse.SUPPRESS)
    server.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS: certificate")
    server.add_argument("--tls-key", type=Path, metavar="FILE", help="... and its private key")
    server.add_argument(
        "--ephemeral-grace",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long an ephemeral node may be offline before it is deleted (default 2)",
    )
    server.add_argument(
        "--max-nodes-per-user",
        type=int,
        default=DEFAULT_MAX_NODES_PER_USER,
        metavar="N",
        help="refuse to register a user's node beyond N (default "
        f"{DEFAULT_MAX_NODES_PER_USER}; 0: no limit)",
    )
    server.add_argument(
        "--key-expiry",
        type=_key_expiry,
        default=DEFAULT_KEY_EXPIRY,
        metavar="DURATION|never",
        help="nodes a person logged in (interactive login, OIDC, an admin's approval) expire "
        f"this long after (default {int(DEFAULT_KEY_EXPIRY // 86400)}d; e.g. 90d; never); "
        "nodes registered with an auth key do not expire",
    )
    server.add_argument(
        "--totp-enrolment",
        choices=TOTP_ENROLMENT,
        default="sign-in",
        help="who sets up a person's TOTP: sign-in (default): their first sign-in with the "
        "right password shows them a new key; admin: only `wgpy admin users totp enrol NAME`, "
        "so a password alone never enrols a second factor",
    )
    server.add_argument(
        "--public-url",
        metavar="URL",
        help="the URL people's browsers reach this server at, for the login URLs nodes show "
        "(default: the scheme and host the node used)",
    )
    server.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)",
    )
    server.add_argument(
        "--base-domain",
        default=DEFAULT_BASE_DOMAIN,
        metavar="DOMAIN",
        help=f"the DNS domain of the nodes' names, HOST.USER.DOMAIN (default "
        f"{DEFAULT_BASE_DOMAIN}; at least two labels)",
    )
    server.add_argument(
        "--dns-domain",
        action="append",
        default=[],
        metavar="DOMAIN=ADDRESS[,ADDRESS...]",
        help="split DNS: nodes resolve names under DOMAIN with these resolvers (say, a "
        "company's DNS server behind a subnet router), and their hosts send those names to "
        "the node's resolver (repeatable)",
    )
    server.add_argument(
        "--stun-listen",
        action="append",
        metavar="HOST:PORT",
        help=f"answer STUN on this UDP address (repeatable; default :{stun.DEFAULT_PORT}, "
        "every IPv4 and IPv6 address; 'off': no STUN)",
    )
    server.add_argument(
        "--turn",
        action="append",
        default=[],
        metavar="URL",
        help="a TURN relay for the nodes, e.g. turn:relay.example:3478?transport=udp or "
        "turns:relay.example:443?transport=tcp (repeatable; coturn with use-auth-secret)",
    )
    server.add_argument(
        "--turn-secret",
        type=Path,
        metavar="FILE",
        help="the file (mode 0600) holding the relays' static-auth-secret",
    )
    server.add_argument(
        "--turn-ttl",
        type=int,
        default=nat.DEFAULT_TURN_TTL,
        metavar="SECONDS",
        help=f"how long TURN credentials are valid (default {nat.DEFAULT_TURN_TTL})",
    )
    server.add_argument(
        "--machine-ca",
        type=Path,
        metavar="CERT",
        help="the operator's machine CA certificate (PEM; `wgpy admin ca init` makes one): "
        "machine certificates it issued can be recorded and checked",
    )
    _add_oidc_arguments(server)
    server.set_defaults(handler=serve, state_dir=DEFAULT_STATE_DIR, database_url=None)
    actions = server.add_subparsers(title="actions", dest="action", metavar="ACTION")
    apikey = actions.add_parser("apikey", help="admin API keys, made in the database directly")
    apikey_actions = apikey.add_subparsers(dest="apikey_action", metavar="ACTION", required=True)
    create = apikey_actions.add_parser(
        "create",
        help="create an admin API key and print it (once)",
        description="Create an admin API key directly in the server's database and print it. "
        "It is shown only this once.",
    )
    create.add_argument(
        "--expiration",
        type=int,
        default=API_KEY_DAYS * 86400,
        metavar="SECONDS",
        help=f"lifetime in seconds (default {API_KEY_DAYS} days)",
    )
    _add_database_arguments(create, argparse.SUPPRESS)
    create.set_defaults(handler=apikey_create)


def _add_oidc_arguments(server: argparse.ArgumentParser) -> None:
    oidc = server.add_argument_group(
        "single sign-on (OIDC)",
        "People connect devices by signing in at an OpenID provider; register the redirect "
        "URI SERVER/oidc/callback there. Each allowed list given must match (as Headscale's).",
    )
    oidc.add_argument("--oidc-issuer", metavar="URL", help="the provider's issuer URL (https)")
    oidc.add_argument("--oidc-client-id", metavar="ID", help="this server's client ID there")
    oidc.add_argument(
        "--oidc-client-secret",
        type=Path,
        metavar="FILE",
        help="the file (mode 0600) holding the client secret",
    )
    for name, what in (
        ("domains", "email domains whose people may join, e.g. example.com"),
        ("users", "email addresses of the people who may join"),
        ("groups", "groups (from the groups claim) whose members may join"),
    ):
        oidc.add_argument(
            f"--oidc-allowed-{name}",
            action="append",
            default=[],
            metavar="LIST",
            help=f"{what} (comma-separated or repeated; default: anyone the provider admits)",
        )
    oidc.add_argument(
        "--oidc-groups-claim",
        default=DEFAULT_GROUPS_CLAIM,
        metavar="NAME",
        help=f"the ID token claim that lists a person's groups (default {DEFAULT_GROUPS_CLAIM})",
    )


def _add_database_arguments(parser: argparse.ArgumentParser, default: object) -> None:
    # Given before or after ``apikey create``: defaults are set once, on ``server``.
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help=f"SQLite database directory (default {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--database-url",
        default=default,
        metavar="URL",
        help=f"postgresql://... to use PostgreSQL instead of SQLite (or ${DATABASE_ENV})",
    )


def _stun_listen(texts: list[str] | None) -> tuple[tuple[str, int], ...]:
    """``HOST:PORT`` (HOST an IP address, IPv6 in brackets; none: every address) or
    ``off``."""
    texts = texts or [f":{stun.DEFAULT_PORT}"]
    if "off" in texts:
        if len(texts) > 1:
            raise CommandError("--stun-listen off cannot go with other addresses", ExitStatus.USAGE)
        return ()
    out: list[tuple[str, int]] = []
    for text in texts:
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([0-9.]*):([0-9]{1,5})", text)
        host = (match[1] or match[3] or "") if match else ""
        try:
            if host:
                host = str(ipaddress.ip_address(host))
            valid = match is not None and 0 <= int(match[2] or match[4]) <= 65535
        except ValueError:
            valid = False
        if match is None or not valid or (match[1] and ":" not in host):
            raise CommandError(
                f"--stun-listen {text!r}: expected HOST:PORT with an IP address, e.g. "
                f"192.0.2.1:3478 or [2001:db8::1]:3478, :{stun.DEFAULT_PORT} for every address, "
                "or off",
                ExitStatus.USAGE,
            )
        out.append((host, int(match[2] or match[4])))
    return tuple(out)


def _turn(args: argparse.Namespace) -> tuple[tuple[str, ...], Path | None, int]:
    urls = tuple(getattr(args, "turn", []))
    secret = getattr(args, "turn_secret", None)
    ttl = getattr(args, "turn_ttl", nat.DEFAULT_TURN_TTL)
    try:  # the secret's file is read when the server starts
        for url in urls:
            nat.TurnUrl.parse(url)
        nat.check_turn_ttl(ttl)
    except nat.NatConfigError as e:
        raise CommandError(str(e), ExitStatus.USAGE) from None
    return urls, secret, ttl


def _oidc(args: argparse.Namespace) -> OidcConfig | None:
    """The OIDC settings of the command line, checked for form (the secret's file is read
    when the server starts)."""
    issuer = getattr(args, "oidc_issuer", None)
    client_id = getattr(args, "oidc_client_id", None)
    secret = getattr(args, "oidc_client_secret", None)
    lists = {
        name: tuple(
            item.strip()
            for value in getattr(args, f"oidc_allowed_{name}", [])
            for item in value.split(",")
            if item.strip()
        )
        for name in ("domains", "users", "groups")
    }
    claim = getattr(args, "oidc_groups_claim", DEFAULT_GROUPS_CLAIM)
    if issuer is None:
        if client_id or secret or any(lists.values()) or claim != DEFAULT_GROUPS_CLAIM:
            raise CommandError(
                "the --oidc-* options need --oidc-issuer URL, the OpenID provider to use",
                ExitStatus.USAGE,
            )
        return None
    if not client_id or secret is None:
        raise CommandError(
            "--oidc-issuer needs --oidc-client-id ID and --oidc-client-secret FILE (the "
            "client registered at the provider)",
            ExitStatus.USAGE,
        )
    try:
        OidcSettings.checked(
            issuer,
            client_id,
            "checked when the server starts",
            allowed_domains=lists["domains"],
            allowed_users=lists["users"],
            allowed_groups=lists["groups"],
            groups_claim=claim,
        )
    except ValueError as e:
        raise CommandError(str(e), ExitStatus.USAGE) from None
    return OidcConfig(
        issuer=issuer,
        client_id=client_id,
        client_secret_file=secret,
        allowed_domains=lists["domains"],
        allowed_users=lists["users"],
        allowed_groups=lists["groups"],
        groups_claim=claim,
    )


def _database_url(args: argparse.Namespace, env: Environment) -> str | None:
    url: str | None = args.database_url or env.env.get(DATABASE_ENV) or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise CommandError(
            "--database-url must be a postgresql:// URL (SQLite needs only --state-dir)",
            ExitStatus.USAGE,
        )
    return url


def _config(args: argparse.Namespace, env: Environment) -> ServerConfig:
    host, port = listen_address(getattr(args, "listen", f"127.0.0.1:{DEFAULT_PORT}"))
    grace = getattr(args, "ephemeral_grace", 2.0)
    if not grace >= 0:
        raise CommandError("--ephemeral-grace must be 0 or more seconds", ExitStatus.USAGE)
    max_nodes = getattr(args, "max_nodes_per_user", DEFAULT_MAX_NODES_PER_USER)
    if max_nodes < 0:
        raise CommandError("--max-nodes-per-user must be 0 (no limit) or more", ExitStatus.USAGE)
    turn_urls, turn_secret, turn_ttl = _turn(args)
    base_domain = _base_domain(getattr(args, "base_domain", DEFAULT_BASE_DOMAIN))
    return ServerConfig(
        stun_listen=_stun_listen(getattr(args, "stun_listen", ["off"])),
        turn_urls=turn_urls,
        turn_secret_file=turn_secret,
        turn_ttl=turn_ttl,
        host=host,
        port=port,
        state_dir=args.state_dir,
        database_url=_database_url(args, env),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        ephemeral_grace=grace,
        max_nodes_per_user=max_nodes,
        machine_ca=getattr(args, "machine_ca", None),
        key_expiry=getattr(args, "key_expiry", DEFAULT_KEY_EXPIRY),
        public_url=_public_url(getattr(args, "public_url", None)),
        totp_enrolment=getattr(args, "totp_enrolment", "sign-in"),
        oidc=_oidc(args),
        metrics_listen=_metrics_listen(getattr(args, "metrics_listen", None)),
        base_domain=base_domain,
        dns_domains=_dns_domains(getattr(args, "dns_domain", []), base_domain),
    )


def _metrics_listen(text: str | None) -> tuple[str, int] | None:
    return None if text is None else listen_address(text, "--metrics-listen", 9090)


def _dns_domains(texts: list[str], base_domain: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    try:
        return dns_api.check_dns_domains([dns_api.parse_dns_domain(t, base_domain) for t in texts])
    except ValueError as e:
        raise CommandError(f"--dns-domain: {e}", ExitStatus.USAGE) from None


def _base_domain(text: str) -> str:
    try:
        return check_base_domain(text)
    except ValueError as e:
        raise CommandError(f"--base-domain: {e}", ExitStatus.USAGE) from None


def _key_expiry(text: str) -> float | None:
    return None if text == "never" else float(parse_duration(text))


def _public_url(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return check_server_url(text)
    except ValueError as e:
        raise CommandError(f"--public-url: {e}", ExitStatus.USAGE) from None


def serve(args: argparse.Namespace, env: Environment) -> ExitStatus:
    config = _config(args, env)
    log.configure(env.env.get("LOG_LEVEL", "info"), stream=env.stderr)
    try:
        asyncio.run(_serve(config, env))
    except ServerError as e:
        raise CommandError(str(e)) from None
    return ExitStatus.SUCCESS


async def _serve(config: ServerConfig, env: Environment) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = MeshServer(config)
    await server.start()
    try:
        where = (
            "a PostgreSQL database"
            if config.database_url
            else f"SQLite {config.state_dir / 'wgpy.db' if config.state_dir else ''}"
        )
        env.stdout.write(f"{PROG} server: listening on {server.url} ({where})\n")
        if server.metrics_url:
            env.stdout.write(f"{PROG} server: serving metrics on {server.metrics_url}\n")
        if server.stun_addresses:
            where = ", ".join(stun.show(h, p) for h, p in server.stun_addresses)
            env.stdout.write(f"{PROG} server: answering STUN on udp {where}\n")
        env.stdout.flush()
        if config.tls_cert is None and not _loopback(config.host):
            env.stderr.write(
                f"{PROG} server: warning: plain HTTP on {config.host}: keys and tokens cross "
                "the network in clear; use --tls-cert and --tls-key, or a TLS proxy\n"
            )
        await stop.wait()
    finally:
        await server.stop()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def apikey_create(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.expiration <= 0:
        raise CommandError("--expiration must be a positive number of seconds", ExitStatus.USAGE)
    config = _config(args, env)
    try:
        key, secret = asyncio.run(create_api_key(config, args.expiration))
    except ServerError as e:
        raise CommandError(str(e)) from None
    env.stdout.write(f"{secret}\n")
    env.stderr.write(
        f"{PROG} server apikey create: key {key.id}, valid for {args.expiration} s; "
        "it is shown only this once\n"
    )
    return ExitStatus.SUCCESS
