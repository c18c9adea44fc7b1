"""wg-quick's firewall for a default route through an interface: the ``wg-quick-IFNAME``
nftables table (or, without ``nft``, iptables rules marked with a comment), and how it is
taken away.

For each of the interface's addresses it drops packets to that address that come from
another interface and from no local source (so a host on the LAN cannot reach the tunnel's
address from outside); and it saves the fwmark of the interface's own UDP packets in their
connection and restores it on the replies, so that policy routing sends those replies out of
the tunnel, not into it. The texts are byte for byte wg-quick's.
"""

from __future__ import annotations

NFT = "nft"
NFT_APPLY = [NFT, "-f", "/dev/stdin"]  # read the script on stdin
NFT_LIST_TABLES = [NFT, "list", "tables"]

__all__ = [
    "NFT_APPLY",
    "NFT_LIST_TABLES",
    "iptables_delete",
    "iptables_restore",
    "nft_delete",
    "nft_table",
    "table_name",
]


def table_name(name: str) -> str:
    return f"wg-quick-{name}"


def comment(name: str) -> str:
    """The comment that marks the iptables rules made for ``name``."""
    return f'-m comment --comment "wg-quick(8) rule for {name}"'


def nft_table(name: str, fwmark: int, addresses: list[str], *, v6: bool) -> str:
    """The ``nft -f`` script that makes the table for ``name``'s IPv4 or IPv6 addresses."""
    pf = "ip6" if v6 else "ip"
    table = table_name(name)
    nft = f"add table {pf} {table}\n"
    nft += f"add chain {pf} {table} preraw {{ type filter hook prerouting priority -300; }}\n"
    nft += f"add chain {pf} {table} premangle {{ type filter hook prerouting priority -150; }}\n"
    nft += f"add chain {pf} {table} postmangle {{ type filter hook postrouting priority -150; }}\n"
    for address in addresses:
        nft += (
            f'add rule {pf} {table} preraw iifname != "{name}" {pf} daddr {address} '
            "fib saddr type != local drop\n"
        )
    nft += f"add rule {pf} {table} postmangle meta l4proto udp mark {fwmark} ct mark set mark \n"
    nft += f"add rule {pf} {table} premangle meta l4proto udp meta mark set ct mark \n"
    return nft


def iptables_restore(name: str, fwmark: int, addresses: list[str]) -> str:
    """The same rules for ``iptables-restore -n`` (or ``ip6tables-restore -n``)."""
    marker = comment(name)
    restore = "*raw\n"
    for address in addresses:
        restore += (
            f"-I PREROUTING ! -i {name} -d {address} -m addrtype ! --src-type LOCAL "
            f"-j DROP {marker}\n"
        )
    restore += (
        f"COMMIT\n*mangle\n-I POSTROUTING -m mark --mark {fwmark} -p udp -j CONNMARK "
        f"--save-mark {marker}\n-I PREROUTING -p udp -j CONNMARK --restore-mark {marker}\n"
        "COMMIT\n"
    )
    return restore


def iptables_program(*, v6: bool) -> str:
    return "ip6tables" if v6 else "iptables"


def nft_delete(name: str, tables: str) -> str:
    """The ``nft -f`` script that deletes ``name``'s tables, given ``tables`` (the output of
    ``nft list tables``); empty if there are none."""
    suffix = f" {table_name(name)}"
    return "".join(f"delete {line}\n" for line in tables.splitlines() if line.endswith(suffix))


def iptables_delete(name: str, saved: str) -> str | None:
    """The ``iptables-restore -n`` input that deletes ``name``'s rules, given ``saved`` (the
    output of ``iptables-save``), or None if it holds none."""
    marker = comment(name)
    restore, found = "", False
    for line in saved.splitlines():
        if not (
            line.startswith("*") or line == "COMMIT" or (line.startswith("-A ") and marker in line)
        ):
            continue
        if line.startswith("-A"):
            found = True
            line = "-D" + line[2:]
        restore += line + "\n"
    return restore if found else None
