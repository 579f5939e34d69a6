"""
Socket helpers that several UDP daemons share: a bigger receive buffer,
and an interface's IPv4 address by name (for multicast joins and the
outgoing multicast interface).
"""

from __future__ import annotations

import fcntl
import socket
import struct

__all__ = ["growReceiveBuffer", "interfaceAddress"]

_SIOCGIFADDR = 0x8915


def growReceiveBuffer(sock: socket.socket, size: int) -> int:
    """
    Ask for a receive buffer of C{size} bytes (beyond net.core.rmem_max when
    privileged); return what the kernel granted.
    """
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def interfaceAddress(name: str) -> str:
    """
    The IPv4 address of network interface C{name} (C{eth0}); an address
    given instead of a name is returned as it is.

    @raise ValueError: no such interface, or it has no IPv4 address; the
        message says which.
    """
    try:
        socket.inet_aton(name)
        if name.count(".") == 3:
            return name
    except OSError:
        pass
    raw = name.encode("utf-8", "replace")
    if not raw or len(raw) > 15:
        raise ValueError(f"{name!r} is not an interface name")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", raw))
        except OSError as e:
            if e.errno == 19:  # ENODEV
                raise ValueError(f"no network interface {name!r}") from None
            if e.errno == 99:  # EADDRNOTAVAIL
                raise ValueError(f"interface {name!r} has no IPv4 address") from None
            raise ValueError(f"interface {name!r}: {e.strerror}") from None
    return socket.inet_ntoa(answer[20:24])
