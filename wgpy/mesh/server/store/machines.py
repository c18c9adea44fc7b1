"""Machines in the store: the certificates the operator's machine CA issued, as admins
recorded them (``wgpy admin machines issue``), and their revocation. The certificate's checks
(chain, validity, proof of possession) are wgpy/machinecert.py's; this keeps what the server
must remember: which serials it knows and which are revoked (a revoked machine's nodes expire
with it: rows.node_from), and the secret its challenges are made with."""

from __future__ import annotations

from wgpy.machinecert import Machine

from ..db import IntegrityConflict, Row, placeholders
from ..errors import Conflict, Forbidden, NotFound
from ..models import MachineRecord
from .rows import Repository

MACHINE_COLUMNS = "id, name, serial, fingerprint, not_before, not_after, revoked_at, created_at"


def machine_from(row: Row) -> MachineRecord:
    return MachineRecord(
        id=int(row["id"]),
        name=row["name"],
        serial=row["serial"],
        fingerprint=row["fingerprint"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        created_at=row["created_at"],
    )


class MachineRepository(Repository):
    """Machine certificates: each read or write one transaction."""

    async def add(self, machine: Machine, certificate_pem: str) -> MachineRecord:
        """Record a certificate the caller checked (machinecert.check_machine_certificate)."""
        try:
            async with self.db.transaction() as tx:
                row = await tx.fetchrow(
                    "INSERT INTO machines (name, serial, fingerprint, certificate, not_before,"
                    " not_after, revoked_at, created_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)"
                    f" RETURNING {MACHINE_COLUMNS}",
                    machine.name,
                    machine.serial,
                    machine.fingerprint,
                    certificate_pem,
                    machine.not_before,
                    machine.not_after,
                    self.clock(),
                )
        except IntegrityConflict:
            raise Conflict(
                f"a certificate with serial {machine.serial} is already recorded"
            ) from None
        assert row is not None
        return machine_from(row)

    async def accept(self, machine: Machine, certificate_pem: str) -> MachineRecord:
        """For a certificate that passed machinecert.verify_proof: its record, made on first
        use if an admin did not record it (a CA's certificates issued by other tools can be
        revoked too). Forbidden when it is revoked, or when its serial is recorded for another
        certificate."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO machines (name, serial, fingerprint, certificate, not_before,"
                " not_after, revoked_at, created_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)"
                " ON CONFLICT DO NOTHING",
                machine.name,
                machine.serial,
                machine.fingerprint,
                certificate_pem,
                machine.not_before,
                machine.not_after,
                self.clock(),
            )
            row = await tx.fetchrow(
                f"SELECT {MACHINE_COLUMNS} FROM machines WHERE serial = ?", machine.serial
            )
        if row is None or row["fingerprint"] != machine.fingerprint:
            raise Forbidden(
                f"another certificate with serial {machine.serial} is recorded; the machine CA "
                "must not reuse serials: issue a new certificate"
            )
        record = machine_from(row)
        if record.revoked_at is not None:
            raise Forbidden(
                f'machine "{record.name}" is revoked; ask an admin for a new machine certificate'
            )
        return record

    async def all(self, name: str | None = None) -> list[MachineRecord]:
        async with self.db.transaction() as tx:
            if name is None:
                rows = await tx.fetch(f"SELECT {MACHINE_COLUMNS} FROM machines ORDER BY id")
            else:
                rows = await tx.fetch(
                    f"SELECT {MACHINE_COLUMNS} FROM machines WHERE name = ? ORDER BY id", name
                )
        return [machine_from(r) for r in rows]

    async def by_serial(self, serial: str) -> MachineRecord | None:
        """The record of the certificate with this serial (hex), revoked or not; None when the
        server never recorded it."""
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                f"SELECT {MACHINE_COLUMNS} FROM machines WHERE serial = ?", serial
            )
        return None if row is None else machine_from(row)

    async def revoke(self, name: str, serial: str | None = None) -> list[MachineRecord]:
        """Revoke machine ``name``'s certificates (only the one with ``serial`` if given);
        revoking again keeps the first time. The machine's certificates, after."""
        now = self.clock()
        async with self.db.transaction() as tx:
            if serial is None:
                await tx.execute(
                    "UPDATE machines SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                    now,
                    name,
                )
            else:
                await tx.execute(
                    "UPDATE machines SET revoked_at = ? WHERE name = ? AND serial = ?"
                    " AND revoked_at IS NULL",
                    now,
                    name,
                    serial,
                )
            rows = await tx.fetch(
                f"SELECT {MACHINE_COLUMNS} FROM machines WHERE name = ? ORDER BY id", name
            )
            # Their nodes expire with them (rows.node_from): the hubs drop them from maps.
            revoked = [int(r["id"]) for r in rows if r["revoked_at"] == now]
            if revoked:
                nodes = await tx.fetch(
                    f"SELECT id FROM nodes WHERE machine_id IN ({placeholders(revoked)})",
                    *revoked,
                )
                tx.changed(int(n["id"]) for n in nodes)
        if not rows:
            raise NotFound(f'there is no machine "{name}"')
        records = [machine_from(r) for r in rows]
        if serial is not None and all(r.serial != serial for r in records):
            raise NotFound(f'machine "{name}" has no certificate with serial {serial}')
        return records

    async def secret(self, name: str, size: int = 32) -> bytes:
        """The server secret ``name`` (server_secrets), shared by every replica: made with
        ``size`` random bytes by whichever replica asks first."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                name,
                self.rng(size).hex(),
                self.clock(),
            )
            value = await tx.fetchval("SELECT value FROM server_secrets WHERE name = ?", name)
        return bytes.fromhex(value)
