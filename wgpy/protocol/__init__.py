"""WireGuard as in the whitepaper, sans-IO.

Nothing in this package reads a clock, draws randomness or touches a socket: time (``now``),
wall-clock time and randomness are passed in by the caller, so two devices can be driven in
memory byte for byte.
"""
