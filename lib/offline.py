"""Guarantee that a run stays offline: with `STUDY_BLOCK_NETWORK=1` every socket connection to a
non-loopback address raises. `import lib` installs the guard, so a notebook kernel started with that variable
(the test suite does this for the smoke profile) fails loudly at the first attempt to reach the network."""
from __future__ import annotations

import ipaddress
import socket

_real_connect = socket.socket.connect


class NetworkBlockedError(ConnectionRefusedError):
    pass


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: resolving it is already network use


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkBlockedError(f"network access blocked (STUDY_BLOCK_NETWORK=1): tried to connect to {address!r}")
    return _real_connect(self, address)


def block_network() -> None:
    socket.socket.connect = _guarded_connect


def unblock_network() -> None:
    socket.socket.connect = _real_connect
