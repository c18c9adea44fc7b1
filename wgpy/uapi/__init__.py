"""The cross-platform configuration protocol (UAPI) that ``wg`` speaks to a userspace
WireGuard over ``/var/run/wireguard/NAME.sock``.

| module | concept |
| --- | --- |
| ``paths`` | where control sockets live (the directory, the suffix) |
| ``protocol`` | the daemon's side, sans-IO: a get's reply, a set applied (``IpcError``) |
| ``server`` | the daemon's side on asyncio: the socket, its limits, removal |
| ``client`` | the command line's side, blocking: ``uapi_get``/``uapi_set`` (``UapiError``) |

Imports go one way: ``server`` uses ``protocol`` and ``paths``, ``client`` uses ``paths``;
``protocol`` uses the core (``wgpy.protocol``), ``wgpy.keys`` and the log, never
``wgpy.device``: the interface implements its ``UapiTarget``.
"""
