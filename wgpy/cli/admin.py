"""``wgpy admin --server URL --api-key KEY OBJECT ACTION``: the admin API of docs/mesh-api.md
on the command line (users, pre-auth keys, nodes, routes, login requests, the policy, admin API
keys, machine certificates, the audit log). A password is
typed twice without echo, or read from stdin with ``--password-stdin``; it is never printed.

``wgpy admin ca init`` works without a server: it makes the operator's machine CA in a
directory (key mode 0600). ``machines issue`` signs with that CA here, on the admin's
machine, and records the certificate on the server (``wgpy server --machine-ca CERT``) before
it writes any file: the CA key never goes to the server.

Tables for people, ``--json`` (before the object or after the action) for scripts. A secret
the server shows once (a new pre-auth key or API key) is printed alone on stdout, so that
``KEY=$(wgpy admin preauthkeys create --user alice)`` works.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from wgpy import machinecert
from wgpy.mesh.client.admin import AdminClient
from wgpy.mesh.client.api import ApiError, MeshClientError, check_server_url

from .environment import PROG, CommandError, Environment, ExitStatus
from .machine import read_file, write_new_file

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(commands: Subparsers) -> None:
    """Add ``admin`` to the ``wgpy`` parser."""
    admin = commands.add_parser(
        "admin",
        help="manage the mesh: users, pre-auth keys, nodes, policy",
        description="Manage a coordination server through its admin API.",
    )
    admin.add_argument("--server", metavar="URL", help="the server (default $WGPY_SERVER)")
    admin.add_argument("--api-key", metavar="KEY", help="an admin API key (default $WGPY_API_KEY)")
    admin.add_argument("--ca-cert", metavar="FILE", help="trust only this CA for the server")
    admin.add_argument("--json", action="store_true", help="print JSON instead of tables")
    admin.set_defaults(handler=admin_command)
    groups = admin.add_subparsers(title="objects", dest="object", metavar="OBJECT", required=True)

    def action(
        group: Subparsers, name: str, function: AdminAction, help: str
    ) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        parser.set_defaults(admin_action=function)
        # --json after the action too (`wgpy admin users list --json`), as `wgpy status --json`;
        # SUPPRESS: when it is not given here, the one before the object (if any) stands
        parser.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print JSON instead of tables",
        )
        return parser

    users = groups.add_parser("users", help="users").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    create_user = action(users, "create", users_create, "create a user")
    create_user.add_argument("name", metavar="NAME")
    create_user.add_argument(
        "--password",
        action="store_true",
        help="give the user a password to sign in with (asked for on the terminal)",
    )
    _password_stdin(create_user)
    action(users, "list", users_list, "list the users")
    action(users, "delete", users_delete, "delete a user").add_argument("name", metavar="NAME")
    passwd = action(
        users, "passwd", users_passwd, "set a user's password (this also unlocks the account)"
    )
    passwd.add_argument("name", metavar="NAME")
    _password_stdin(passwd)
    totp = users.add_parser("totp", help="a user's second factor (TOTP)").add_subparsers(
        dest="totp_action", metavar="ACTION", required=True
    )
    action(
        totp, "reset", users_totp_reset, "forget a user's TOTP: they enrol again at next sign-in"
    ).add_argument("name", metavar="NAME")
    action(
        totp,
        "enrol",
        users_totp_enrol,
        "set up a user's TOTP now (a new key, shown once, replaces any other): hand the key "
        "or the otpauth:// URI to the person; no sign-in can enrol it then",
    ).add_argument("name", metavar="NAME")

    keys = groups.add_parser("preauthkeys", help="pre-auth keys").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    create = action(keys, "create", preauthkeys_create, "create a pre-auth key (shown once)")
    create.add_argument(
        "--user", metavar="USER", required=True, help="the user its nodes belong to (required)"
    )
    create.add_argument("--reusable", action="store_true", help="may register many nodes")
    create.add_argument(
        "--ephemeral", action="store_true", help="its nodes are removed when they log out"
    )
    create.add_argument(
        "--expiration", metavar="DURATION", type=parse_duration, help="e.g. 30m, 1h, 7d"
    )
    create.add_argument("--tags", metavar="TAGS", type=_tags, help="tag:a,tag:b for its nodes")
    action(keys, "list", preauthkeys_list, "list the pre-auth keys")
    action(keys, "expire", preauthkeys_expire, "expire a pre-auth key").add_argument("id")

    nodes = groups.add_parser("nodes", help="nodes").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    action(nodes, "list", nodes_list, "list the nodes").add_argument(
        "--user", metavar="USER", help="only this user's"
    )
    action(nodes, "expire", nodes_expire, "expire a node's key").add_argument("id")
    expiry = action(
        nodes,
        "expiry",
        nodes_expiry,
        "set when a node's key expires: never (a server's node) or DURATION from now",
    )
    expiry.add_argument("id")
    expiry.add_argument("expiry", metavar="never|DURATION", type=_expiry)
    action(nodes, "delete", nodes_delete, "delete a node").add_argument("id")
    rename = action(nodes, "rename", nodes_rename, "rename a node")
    rename.add_argument("id")
    rename.add_argument("hostname", metavar="NAME")
    tag = action(nodes, "tag", nodes_tag, "set a node's tags (an empty TAGS clears them)")
    tag.add_argument("id")
    tag.add_argument("tags", metavar="TAGS", type=_tags)

    routes = groups.add_parser(
        "routes", help="subnet and exit routes nodes advertise"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    action(
        routes, "list", routes_list, "list the routes nodes advertise or have approved"
    ).add_argument("--node", metavar="NODE", help="only this node's (its id)")
    approve_routes = action(
        routes,
        "approve",
        routes_approve,
        "approve routes a node advertises (exit node: 0.0.0.0/0 ::/0)",
    )
    approve_routes.add_argument("id", metavar="NODE", help="the node's id")
    approve_routes.add_argument("prefixes", metavar="PREFIX", nargs="+")
    revoke_routes = action(
        routes,
        "revoke",
        routes_revoke,
        "take back the approval of a node's routes (all: no PREFIX)",
    )
    revoke_routes.add_argument("id", metavar="NODE", help="the node's id")
    revoke_routes.add_argument("prefixes", metavar="PREFIX", nargs="*")

    login = groups.add_parser(
        "login", help="login requests: nodes waiting for a person to approve them"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    action(login, "list", login_list, "list the login requests waiting").add_argument(
        "--all", action="store_true", help="also those approved, refused, cancelled or expired"
    )
    approve = action(
        login,
        "approve",
        login_approve,
        "approve a waiting node (ID: the last part of the URL it shows) as USER's node",
    )
    approve.add_argument("id", metavar="ID")
    approve.add_argument(
        "--user", metavar="USER", required=True, help="the user the node is to belong to"
    )
    refuse = action(login, "refuse", login_refuse, "refuse a waiting node's login request")
    refuse.add_argument("id", metavar="ID")
    refuse.add_argument("--message", metavar="TEXT", help="why, for the node's person")

    policy = groups.add_parser("policy", help="the access policy").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    action(policy, "get", policy_get, "print the policy")
    action(policy, "set", policy_set, "replace the policy with FILE (- for stdin)").add_argument(
        "file", metavar="FILE"
    )
    action(
        policy, "check", policy_check, "check FILE (- for stdin) without applying it"
    ).add_argument("file", metavar="FILE")
    action(
        policy,
        "delete",
        policy_delete,
        "delete the policy: the default policy is in force again (each user's nodes reach "
        "each other, nothing across users)",
    )

    apikeys = groups.add_parser("apikeys", help="admin API keys").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    create_api = action(apikeys, "create", apikeys_create, "create an admin API key (shown once)")
    create_api.add_argument(
        "--expiration", metavar="DURATION", type=parse_duration, help="e.g. 30d (server default)"
    )
    action(apikeys, "list", apikeys_list, "list the admin API keys (never their secrets)")
    action(
        apikeys, "expire", apikeys_expire, "revoke an admin API key: it stops working at once"
    ).add_argument("id")

    ca = groups.add_parser("ca", help="the machine CA (local files; no server needed)")
    ca_actions = ca.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = ca_actions.add_parser(
        "init",
        help="make the operator's machine CA: DIR/ca.key (0600) and DIR/ca.crt",
        description="Make the operator's machine CA: DIR/ca.key (mode 0600; keep it off the "
        "server) and DIR/ca.crt (give it to `wgpy server --machine-ca`).",
    )
    init.add_argument("--dir", type=Path, default=Path("wgpy-ca"), help="default ./wgpy-ca")
    init.add_argument("--name", default="wgpy machine CA", help="the CA's common name")
    init.add_argument(
        "--expiration",
        metavar="DURATION",
        type=parse_duration,
        default=10 * 365 * 86400,
        help="how long the CA is valid (default 10 years, e.g. 3650d)",
    )
    init.set_defaults(admin_local=ca_init)

    machines = groups.add_parser("machines", help="machine certificates").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    issue = action(
        machines,
        "issue",
        machines_issue,
        "issue a machine certificate (with a new key, or for a CSR made on the device) and "
        "record it on the server",
    )
    issue.add_argument("name", metavar="NAME")
    issue.add_argument(
        "--ca-dir",
        type=Path,
        default=Path("wgpy-ca"),
        help="the CA's directory (default ./wgpy-ca)",
    )
    issue.add_argument(
        "--csr",
        type=Path,
        metavar="FILE",
        help="sign this request (`wgpy machine csr`) instead of making a key",
    )
    issue.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="write NAME.crt (and NAME.key, 0600, without --csr) here (default .)",
    )
    issue.add_argument(
        "--expiration",
        metavar="DURATION",
        type=parse_duration,
        default=365 * 86400,
        help="how long the certificate is valid (default 365d; never past the CA)",
    )
    action(machines, "list", machines_list, "list the machine certificates")
    revoke = action(
        machines, "revoke", machines_revoke, "revoke a machine's certificates (or one, --serial)"
    )
    revoke.add_argument("name", metavar="NAME")
    revoke.add_argument("--serial", metavar="HEX", help="only this certificate")

    audit = action(
        groups,
        "audit",
        audit_list,
        "show the audit log: registrations, logins, sign-ins and admin actions, refused ones "
        "too (oldest first)",
    )
    audit.add_argument("--user", metavar="USER", help="only this user's events")
    audit.add_argument(
        "--since",
        metavar="WHEN",
        type=_since,
        help="only events since a time (2026-12-07T21:00:00Z) or this long ago (e.g. 1h, 7d)",
    )
    audit.add_argument(
        "--limit", metavar="N", type=int, default=100, help="the newest N events (default 100)"
    )


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of asking",
    )


def parse_duration(text: str) -> int:
    """Seconds in ``90``, ``90s``, ``30m``, ``1h30m``, ``7d``, ``2w``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text.isdigit():
        return int(text)
    parts = re.findall(r"(\d+)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 90s, 30m, 1h30m or 7d"
        )
    seconds = sum(int(n) * units[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be longer than 0 seconds")
    return seconds


def _expiry(text: str) -> int | None:
    """``never`` (None) or a duration's seconds."""
    return None if text == "never" else parse_duration(text)


def _since(text: str) -> float:
    """A moment: an ISO 8601 time (UTC unless it says otherwise) or a duration ago."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        try:
            return time.time() - parse_duration(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a time such as 2026-12-07T21:00:00Z nor a duration such "
                "as 30m or 7d"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


AdminAction = Callable[[AdminClient, argparse.Namespace, Environment], Coroutine[Any, Any, None]]


def admin_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    local: Callable[[argparse.Namespace, Environment], None] | None = getattr(
        args, "admin_local", None
    )
    if local is not None:
        local(args, env)
        return ExitStatus.SUCCESS
    server = args.server or env.env.get("WGPY_SERVER")
    if not server:
        raise CommandError("give the server's URL with --server or WGPY_SERVER")
    api_key = args.api_key or env.env.get("WGPY_API_KEY")
    if not api_key:
        raise CommandError("give an admin API key with --api-key or WGPY_API_KEY")
    try:
        url = check_server_url(server)
    except ValueError as e:
        raise CommandError(f"--server: {e}") from None
    action: AdminAction = args.admin_action

    async def go() -> None:
        async with AdminClient(url, token=api_key, ca_cert=args.ca_cert) as client:
            await action(client, args, env)

    try:
        asyncio.run(go())
    except ApiError as e:
        if e.status == 401:
            raise CommandError(f"the server refused the API key: {e.message}") from None
        raise CommandError(e.message) from None
    except MeshClientError as e:
        raise CommandError(e.message) from None
    return ExitStatus.SUCCESS


# ---------------------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return _printable(",".join(map(str, value))) or "-"
    if isinstance(value, dict):
        return _printable(str(value.get("name", value.get("id", "-"))))
    return _printable(str(value))


def _printable(text: str) -> str:
    """A cell as the terminal may show it: control characters (a newline, an escape
    sequence from a hostile client's input) written escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def format_table(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """Plain aligned columns under a header; ``columns`` are (title, field) pairs."""
    table = [[title for title, _ in columns]]
    table += [[_cell(row.get(name)) for _, name in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    return "\n".join(lines) + "\n"


USER_COLUMNS = [("ID", "id"), ("NAME", "name"), ("CREATED", "created_at")]
KEY_COLUMNS = [
    ("ID", "id"),
    ("USER", "user"),
    ("REUSABLE", "reusable"),
    ("EPHEMERAL", "ephemeral"),
    ("USED", "used"),
    ("TAGS", "tags"),
    ("EXPIRES", "expires_at"),
    ("CREATED", "created_at"),
]
API_KEY_COLUMNS = [
    ("ID", "id"),
    ("EXPIRED", "expired"),
    ("EXPIRES", "expires_at"),
    ("CREATED", "created_at"),
]
NODE_COLUMNS = [
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("USER", "user"),
    ("IPV4", "ipv4"),
    ("IPV6", "ipv6"),
    ("TAGS", "tags"),
    ("ONLINE", "online"),
    ("LAST SEEN", "last_seen"),
    ("EXPIRES", "expires_at"),
    ("MACHINE", "machine"),
]


def _show(env: Environment, args: argparse.Namespace, data: Any, text: str) -> None:
    """``text`` for people, or ``data`` as JSON with ``--json``."""
    env.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else text)


# ---------------------------------------------------------------------------- actions


def read_password(args: argparse.Namespace, env: Environment) -> str:
    """The new password for user ``args.name``: the first line of stdin with
    ``--password-stdin``, else typed twice on the terminal without echo."""
    if args.password_stdin:
        try:
            line = env.stdin.readline().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise CommandError("the password on standard input is not UTF-8 text") from None
        if not line:
            raise CommandError("standard input holds no password (an empty first line)")
        return line
    password = env.read_secret(f"New password for {args.name}: ")
    if not password:
        raise CommandError("no password was typed; nothing was changed")
    if env.read_secret("The same again: ") != password:
        raise CommandError("the two passwords differ; nothing was changed")
    return password


async def users_create(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    password = read_password(args, env) if args.password or args.password_stdin else None
    user = await client.create_user(args.name, password)
    _show(env, args, user, format_table(_user_columns([user]), [user]))


async def users_passwd(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    await client.set_password(args.name, read_password(args, env))
    _show(env, args, {}, f"password of {args.name} set\n")


async def users_totp_reset(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    await client.reset_totp(args.name)
    _show(env, args, {}, f"TOTP of {args.name} reset: they enrol again at their next sign-in\n")


async def users_totp_enrol(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    enrolment = await client.enrol_totp(args.name)
    _show(
        env,
        args,
        enrolment,
        f"TOTP of {args.name} set up; give them this key for their authenticator app (it is "
        f"not shown again):\n{enrolment['secret']}\n{enrolment['uri']}\n",
    )


async def users_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    users = await client.list_users()
    _show(env, args, users, format_table(_user_columns(users), users))


def _user_columns(users: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The user table's columns: whether each can sign in too, from a server that says."""
    columns = list(USER_COLUMNS)
    if any("password" in user for user in users):
        columns += [("PASSWORD", "password"), ("TOTP", "totp")]
    if any(user.get("oidc") for user in users):
        columns += [("SSO", "oidc"), ("GROUPS", "groups")]
    return columns


async def users_delete(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    await client.delete_user(args.name)
    _show(env, args, {}, f"deleted user {args.name}\n")


async def preauthkeys_create(
    client: AdminClient, args: argparse.Namespace, env: Environment
) -> None:
    secret, record = await client.create_preauthkey(
        user=args.user,
        reusable=args.reusable,
        ephemeral=args.ephemeral,
        expiration_seconds=args.expiration,
        tags=args.tags,
    )
    _show_new_key(env, args, secret, record)


def _show_new_key(
    env: Environment, args: argparse.Namespace, secret: str, record: dict[str, Any]
) -> None:
    """A key just made: alone on stdout (KEY=$(wgpy admin ... create)), once."""
    _show(env, args, {**record, "key": secret}, secret + "\n")
    if not args.json:
        env.stderr.write(f"{PROG} admin: this key is shown only once; keep it safe\n")


async def preauthkeys_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    keys = await client.list_preauthkeys()
    _show(env, args, keys, format_table(KEY_COLUMNS, keys))


async def preauthkeys_expire(
    client: AdminClient, args: argparse.Namespace, env: Environment
) -> None:
    await client.expire_preauthkey(args.id)
    _show(env, args, {}, f"expired pre-auth key {args.id}\n")


async def nodes_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    nodes = await client.list_nodes(args.user)
    _show(env, args, nodes, format_table(NODE_COLUMNS, nodes))


async def nodes_expire(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    await client.expire_node(args.id)
    _show(env, args, {}, f"expired node {args.id}\n")


async def nodes_expiry(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    node = await client.set_node_expiry(args.id, args.expiry)
    when = node.get("expires_at") or "never"
    _show(env, args, node, f"node {args.id}'s key expires: {when}\n")


LOGIN_COLUMNS = [
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("PUBLIC KEY", "public_key"),
    ("STATE", "state"),
    ("USER", "user"),
    ("EXPIRES", "expires_at"),
]


async def login_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    requests = await client.list_login_requests(args.all)
    _show(env, args, requests, format_table(LOGIN_COLUMNS, requests))


async def login_approve(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    node = await client.approve_login(args.id, args.user)
    _show(
        env,
        args,
        node,
        f"approved: node {node.get('id')} {node.get('hostname')} of user {node.get('user')} "
        f"({node.get('ipv4')}, {node.get('ipv6')}), key expires: "
        f"{node.get('expires_at') or 'never'}\n",
    )


async def login_refuse(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    request = await client.refuse_login(args.id, args.message)
    _show(env, args, request, f"refused login request {args.id}\n")


async def nodes_delete(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    await client.delete_node(args.id)
    _show(env, args, {}, f"deleted node {args.id}\n")


async def nodes_rename(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    node = await client.rename_node(args.id, args.hostname)
    name = node.get("hostname") or args.hostname  # the server may have made it unique
    _show(env, args, node, f"renamed node {args.id} to {name}\n")


async def nodes_tag(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    node = await client.tag_node(args.id, args.tags)
    _show(env, args, node, f"node {args.id} now has tags {_cell(node.get('tags', args.tags))}\n")


ROUTE_COLUMNS = [
    ("NODE", "node"),
    ("NAME", "name"),
    ("USER", "user"),
    ("PREFIX", "prefix"),
    ("ADVERTISED", "advertised"),
    ("APPROVED", "approved"),
    ("PRIMARY", "primary"),
    ("APPROVED BY", "approved_by"),
]


async def routes_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    routes = await client.list_routes(args.node)
    _show(env, args, routes, format_table(ROUTE_COLUMNS, routes))


async def routes_approve(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    routes = await client.approve_routes(args.id, args.prefixes)
    _show(env, args, routes, format_table(ROUTE_COLUMNS, routes))


async def routes_revoke(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    routes = await client.revoke_routes(args.id, args.prefixes)
    _show(env, args, routes, format_table(ROUTE_COLUMNS, routes))


DEFAULT_POLICY = (
    "no policy is set: the default policy is in force (each user's nodes reach each other, "
    "nothing across users)"
)


async def policy_get(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    document, version = await client.get_policy()
    if args.json:
        env.stdout.write(json.dumps({"version": version, "policy": document}, indent=2) + "\n")
    elif document is None:
        env.stdout.write(DEFAULT_POLICY + "\n")
    else:
        env.stdout.write(json.dumps(document, indent=2) + "\n")  # ready to edit and set


def _read_policy(path: str, env: Environment) -> Any:
    try:
        data = env.stdin.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return json.loads(data)
    except ValueError as e:
        raise CommandError(f"{path} is not JSON: {e}") from None


async def policy_set(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    version = await client.set_policy(_read_policy(args.file, env))
    suffix = f" (version {version})" if version is not None else ""
    _show(env, args, {"version": version}, f"policy updated{suffix}\n")


async def policy_check(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    await client.check_policy(_read_policy(args.file, env))
    _show(env, args, {}, "the policy is valid\n")


async def policy_delete(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    version = await client.delete_policy()
    suffix = f" (version {version})" if version is not None else ""
    _show(env, args, {"version": version}, f"policy deleted{suffix}; the default is in force\n")


async def apikeys_create(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    secret, record = await client.create_api_key(args.expiration)
    _show_new_key(env, args, secret, record)


async def apikeys_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    keys = await client.list_api_keys()
    _show(env, args, keys, format_table(API_KEY_COLUMNS, keys))


async def apikeys_expire(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    record = await client.expire_api_key(args.id)
    _show(env, args, record, f"expired API key {args.id}\n")


# ---------------------------------------------------------------------------- machines

MACHINE_COLUMNS = [
    ("ID", "id"),
    ("NAME", "name"),
    ("SERIAL", "serial"),
    ("REVOKED", "revoked"),
    ("EXPIRED", "expired"),
    ("NOT AFTER", "not_after"),
    ("CREATED", "created_at"),
]


def ca_init(args: argparse.Namespace, env: Environment) -> None:
    directory: Path = args.dir
    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    for path in (key_path, cert_path):
        if path.exists():
            raise CommandError(f"{path} already exists; this directory holds a CA already")
    try:
        key, cert = machinecert.create_ca(
            args.name,
            now=time.time(),
            lifetime=args.expiration,
            serial=x509.random_serial_number(),
        )
    except (ValueError, OverflowError) as e:  # an --expiration past the year 9999
        raise CommandError(f"cannot make the CA: {e}; choose a shorter --expiration") from None
    write_new_file(key_path, machinecert.private_key_pem(key), secret=True)
    write_new_file(cert_path, machinecert.certificate_pem(cert), secret=False)
    env.stdout.write(f"{cert_path}\n")
    env.stderr.write(
        f"{PROG} admin: made the machine CA {cert_path} and its key {key_path} (keep the key "
        f"off the server); start the server with --machine-ca {cert_path}\n"
    )


def _load_ca(directory: Path) -> tuple[machinecert.SigningKey, x509.Certificate]:
    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    try:
        key = machinecert.load_private_key(read_file(key_path), f"the CA key {key_path}")
        cert = machinecert.load_certificate(read_file(cert_path), f"the CA certificate {cert_path}")
    except machinecert.MachineCertError as e:
        raise CommandError(str(e)) from None
    return key, cert


async def machines_issue(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    ca_key, ca_cert = _load_ca(args.ca_dir)
    out: Path = args.out
    key_path, cert_path = out / f"{args.name}.key", out / f"{args.name}.crt"
    device_key: machinecert.SigningKey | None = None
    public: machinecert.PublicKey
    try:
        machinecert.check_machine_name(args.name)
        if args.csr is None:
            device_key = machinecert.new_private_key()
            public = device_key.public_key()
        else:
            csr = machinecert.load_csr(read_file(args.csr), f"the request {args.csr}")
            public = machinecert.csr_public_key(csr)
        cert = machinecert.issue(
            ca_key,
            ca_cert,
            public,
            args.name,
            now=time.time(),
            lifetime=args.expiration,
            serial=x509.random_serial_number(),
        )
    except machinecert.MachineCertError as e:
        raise CommandError(str(e)) from None
    for path in (cert_path,) if device_key is None else (key_path, cert_path):
        if path.exists():
            raise CommandError(f"{path} already exists; move it away or choose another --out")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    record = await client.add_machine(pem.decode())  # recorded first: nothing written if refused
    if device_key is not None:
        write_new_file(key_path, machinecert.private_key_pem(device_key), secret=True)
    write_new_file(cert_path, pem, secret=False)
    written = [str(cert_path)] if device_key is None else [str(key_path), str(cert_path)]
    _show(env, args, {**record, "files": written}, " ".join(written) + "\n")
    if device_key is not None and not args.json:
        env.stderr.write(
            f"{PROG} admin: copy {key_path} to the device (mode 0600) and delete it here\n"
        )


async def machines_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    machines = await client.list_machines()
    _show(env, args, machines, format_table(MACHINE_COLUMNS, machines))


AUDIT_COLUMNS = [
    ("TIME", "at"),
    ("EVENT", "event"),
    ("RESULT", "result"),
    ("METHOD", "method"),
    ("USER", "user"),
    ("NODE", "node"),
    ("SOURCE", "source"),
    ("DETAIL", "detail"),
]


async def audit_list(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    if not 1 <= args.limit <= 10_000:
        raise CommandError("--limit must be a number of events from 1 to 10000")
    events = await client.list_audit(limit=args.limit, since=args.since, user=args.user)
    _show(env, args, events, format_table(AUDIT_COLUMNS, events))


async def machines_revoke(client: AdminClient, args: argparse.Namespace, env: Environment) -> None:
    machines = await client.revoke_machine(args.name, args.serial)
    which = f" (serial {args.serial})" if args.serial else ""
    _show(env, args, machines, f"revoked machine {args.name}{which}\n")
