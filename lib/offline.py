"""Guarantee that a run stays offline: with `STUDY_BLOCK_NETWORK=1` every attempt to reach a non-loopback
address raises before anything is sent: `connect`, `connect_ex`, `sendto` (UDP) and name look-ups
(`getaddrinfo`, `gethostbyname`) of anything but a loopback name or address. `import lib` installs the guard;
`python -m lib.run` sets the variable for every profile but `paper`, so a notebook kernel of an offline profile
fails loudly at the first attempt to reach the network."""
from __future__ import annotations

import ipaddress
import socket

_real = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex, "sendto": socket.socket.sendto,
         "getaddrinfo": socket.getaddrinfo, "gethostbyname": socket.gethostbyname}
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "")


class NetworkBlockedError(ConnectionRefusedError):
    pass


def _is_local_host(host) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard / loopback
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: resolving it is already network use


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    return _is_local_host(address[0])


def _refuse(what: str, target):
    raise NetworkBlockedError(f"network access blocked (STUDY_BLOCK_NETWORK=1): tried to {what} {target!r}")


def _connect(self, address):
    if not _is_local(address):
        _refuse("connect to", address)
    return _real["connect"](self, address)


def _connect_ex(self, address):
    if not _is_local(address):
        _refuse("connect to", address)
    return _real["connect_ex"](self, address)


def _sendto(self, data, *args):
    address = args[-1] if args else None
    if address is not None and not _is_local(address):
        _refuse("send to", address)
    return _real["sendto"](self, data, *args)


def _getaddrinfo(host, *args, **kwargs):
    if not _is_local_host(host):
        _refuse("look up", host)
    return _real["getaddrinfo"](host, *args, **kwargs)


def _gethostbyname(host):
    if not _is_local_host(host):
        _refuse("look up", host)
    return _real["gethostbyname"](host)


def block_network() -> None:
    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = _connect, _connect_ex, _sendto
    socket.getaddrinfo, socket.gethostbyname = _getaddrinfo, _gethostbyname


def unblock_network() -> None:
    socket.socket.connect, socket.socket.connect_ex = _real["connect"], _real["connect_ex"]
    socket.socket.sendto = _real["sendto"]
    socket.getaddrinfo, socket.gethostbyname = _real["getaddrinfo"], _real["gethostbyname"]


def blocked() -> bool:
    """Is the guard installed in this process?"""
    return socket.socket.connect is _connect
