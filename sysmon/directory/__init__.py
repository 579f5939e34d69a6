"""
The host directory: what sysmon knows about the hosts of a site.

A host record joins an address to the host's name, its cluster node number
(recvstats files senders under it) and its netdump magic (secure mode checks
the client's against it), plus free-form attributes.  Backends provide
L{IHostDirectory}; every lookup returns a L{Deferred} so that a backend may
ask a server (LDAP) without blocking the reactor.  The file backend is
L{sysmon.directory.file.FileHostDirectory}, the LDAP backend
L{sysmon.directory.ldap.LDAPHostDirectory}.
"""

from __future__ import annotations

import ipaddress
from types import MappingProxyType
from typing import Mapping

import attrs
from zope.interface import Interface

__all__ = [
    "DirectoryError",
    "DirectoryUnavailable",
    "HostRecord",
    "IHostDirectory",
    "normalizeAddress",
]


class DirectoryError(Exception):
    """
    The directory cannot be read or holds bad data; the message names where.
    Permanent until an operator acts: a bad file, bad credentials, an
    untrusted certificate, a base DN that does not exist.
    """


class DirectoryUnavailable(DirectoryError):
    """
    The directory server cannot be reached or did not answer in time.
    Transient: the same question may be answered later.
    """


def normalizeAddress(address: str) -> str:
    """
    The canonical text of an IPv4 or IPv6 address, so that C{::1} and
    C{0:0::1} are the same key.  IPv4-mapped IPv6 addresses become IPv4.

    @raise ValueError: C{address} is not an IP address.
    """
    parsed = ipaddress.ip_address(address.strip())
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return str(parsed)


def _frozenAttributes(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class HostRecord:
    """
    One host.

    @ivar name: its host name.
    @ivar address: its IP address, normalized (L{normalizeAddress}).
    @ivar node: its cluster node number, or L{None}.
    @ivar magic: its 64-bit netdump magic, or L{None}.
    @ivar attributes: anything else the directory holds for it.
    """

    name: str
    address: str = attrs.field(converter=normalizeAddress)
    node: int | None = None
    magic: int | None = None
    attributes: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozenAttributes, hash=False
    )


class IHostDirectory(Interface):
    """
    Looks hosts up.  Every method returns a L{Deferred}; a host that is not
    known gives L{None}, never an error.  A directory that cannot answer at
    all fails the Deferred with L{DirectoryError} (L{DirectoryUnavailable}
    while its server is out of reach).
    """

    def lookupAddress(address: str) -> "Deferred[HostRecord | None]":
        """
        The host with this IP address.
        """

    def lookupName(name: str) -> "Deferred[HostRecord | None]":
        """
        The host with this name.
        """

    def lookupNode(node: int) -> "Deferred[HostRecord | None]":
        """
        The host with this cluster node number.
        """

    def hosts() -> "Deferred[list[HostRecord]]":
        """
        Every host, in the directory's order.
        """
