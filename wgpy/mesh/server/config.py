"""The server's settings; every one has a default that suits production."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wgpy.dns.names import DEFAULT_BASE_DOMAIN

from .nat import DEFAULT_TURN_TTL

DEFAULT_PORT = 8080
DEFAULT_STATE_DIR = Path("/var/lib/wgpy")
DEFAULT_MAX_NODES_PER_USER = 100
DEFAULT_KEY_EXPIRY = 180 * 86400.0  # seconds, as Tailscale's default key expiry
DEFAULT_LOGIN_LIFETIME = 600.0  # seconds a login request waits for a person
# Who sets up a person's TOTP: "sign-in" (the default, as Tailscale and Headscale users
# expect): the first sign-in with the right password shows a new key to enrol; "admin": only
# an admin (`wgpy admin users totp enrol NAME`), so a password alone never enrols a factor.
TOTP_ENROLMENT = ("sign-in", "admin")


@dataclass(frozen=True)
class OidcConfig:
    """Single sign-on through an OpenID provider (oidc.py); the secret is read at start."""

    issuer: str  # https://id.example.com (http:// only on loopback)
    client_id: str
    client_secret_file: Path  # mode 0600
    allowed_domains: tuple[str, ...] = ()  # email domains; empty: any
    allowed_users: tuple[str, ...] = ()  # emails; empty: any
    allowed_groups: tuple[str, ...] = ()  # groups (from groups_claim); empty: any
    groups_claim: str = "groups"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port
    state_dir: Path | None = DEFAULT_STATE_DIR  # SQLite: state_dir/wgpy.db
    database_url: str | None = None  # postgresql://...: PostgreSQL instead of SQLite
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ephemeral_grace: float = 2.0  # seconds an ephemeral node may be offline before deletion
    ephemeral_idle: float = 300.0  # ... when its replica died or it never opened a stream
    coalesce: float = 0.05  # seconds changes are gathered before streams hear of them
    keepalive: float = 15.0  # seconds between keepalive lines on an idle map stream
    heartbeat: float = 10.0  # seconds between a replica's heartbeats (and sweeps)
    replica_timeout: float = 30.0  # a replica silent this long is dead: its nodes go offline
    auth_rate: float = 1.0  # register/login requests per second per source address...
    auth_burst: float = 20.0  # ... after a burst of this many
    # endpoint and candidate reports per second per node (each goes to every peer, which
    # then checks the candidates: sends to them) ... after a burst of this many
    report_rate: float = 0.5
    report_burst: float = 20.0
    auth_failure_rate: float = 0.5  # failed authentications per second per source...
    auth_failure_burst: float = 20.0  # ... after a burst of this many; then 429 at once
    header_timeout: float = 20.0  # seconds to send a request's headers (or stay idle between)
    body_timeout: float = 20.0  # seconds to send a request's body
    max_idle_per_source: int = 64  # idle connections per IPv4 address or IPv6 /64 (guard.py)
    max_connections: int = 0  # open connections in all; 0: from the open-files limit
    max_unread_streams: int = 64  # map streams whose client stopped reading, in all...
    max_unread_streams_per_source: int = 8  # ... and per source
    stream_send_buffer: int = 16 * 1024  # bytes of kernel send buffer per map stream
    max_body: int = 64 * 1024  # bytes
    max_nodes_per_user: int = DEFAULT_MAX_NODES_PER_USER  # 0: no limit
    preauth_lifetime: float = 3600.0  # default pre-auth key lifetime, seconds
    api_key_lifetime: float = 90 * 86400.0  # default admin API key lifetime, seconds
    # Nodes that a person approved (interactive login, OIDC, an admin) expire this long
    # after; None: never. Nodes registered with an auth key do not expire.
    key_expiry: float | None = DEFAULT_KEY_EXPIRY
    login_lifetime: float = DEFAULT_LOGIN_LIFETIME
    totp_enrolment: str = "sign-in"  # one of TOTP_ENROLMENT
    # The URL people's browsers reach this server at, for the login URLs nodes show
    # (https://mesh.example.com); None: the scheme and Host the node used.
    public_url: str | None = None
    shutdown_timeout: float = 2.0
    # STUN (UDP) listen addresses; host "": every address, IPv4 and IPv6. None here, so a
    # server made in a program takes no fixed port; `wgpy server` listens on ("", 3478).
    stun_listen: tuple[tuple[str, int], ...] = ()
    stun_rate: float = 20.0  # STUN answers per second per source (stun.py)...
    stun_burst: float = 50.0  # ... after a burst of this many
    turn_urls: tuple[str, ...] = ()  # turn:/turns: URLs of the relays (nat.py)
    turn_secret_file: Path | None = None  # coturn's static-auth-secret, mode 0600
    turn_ttl: int = DEFAULT_TURN_TTL  # seconds TURN credentials are valid
    # The operator's machine CA certificate (PEM; wgpy/machinecert.py): the server records
    # the machine certificates it issued and checks proofs of possession against it.
    machine_ca: Path | None = None
    # Single sign-on for people connecting devices (/oidc/start); None: none.
    oidc: OidcConfig | None = None
    # Where Prometheus scrapes GET /metrics (metrics.py), apart from the API; None: nowhere.
    metrics_listen: tuple[str, int] | None = None
    # The DNS domain of the nodes' names in the map, HOST.USER.BASE (wgpy/dns/names.py;
    # check_base_domain's canonical form).
    base_domain: str = DEFAULT_BASE_DOMAIN
    # Split DNS (dns_api.py): (domain, its resolvers' addresses), as GET /node/dns tells nodes.
    dns_domains: tuple[tuple[str, tuple[str, ...]], ...] = ()
