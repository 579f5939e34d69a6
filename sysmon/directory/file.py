"""
The file backend of the host directory.

The hosts file (format in docs/hosts-file.md, sample in conf/hosts) holds one
host per line::

    # name    address      [node=N] [magic=HEX] [key=value ...]
    node01    10.1.0.1     node=1   magic=0123456789abcdef   rack=r1

The file is read when the directory is made and read again on a lookup
after it changed on disk, so operators edit it without restarting daemons.
A broken edit is logged with file and line and the previous contents keep
serving.
"""

from __future__ import annotations

import os
from typing import Iterable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from sysmon.config import hexInteger, integer
from sysmon.directory import (
    DirectoryError,
    HostRecord,
    IHostDirectory,
    normalizeAddress,
)

__all__ = ["FileHostDirectory", "parseHosts"]

_node = integer(0, 2**31 - 1)
_magic = hexInteger(16)
_MISSING = (-1, -1, -1)


def parseHosts(lines: Iterable[str], path: str = "<hosts>") -> list[HostRecord]:
    """
    Parse the text of a hosts file.

    @raise DirectoryError: for the first bad line, naming file and line.
    """
    records: list[HostRecord] = []
    seen: dict[tuple[str, object], int] = {}
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue

        def bad(message: str) -> DirectoryError:
            return DirectoryError(f"{path}:{number}: {message}")

        fields = text.split()
        if len(fields) < 2:
            raise bad(f"expected 'name address [key=value ...]', got {text!r}")
        name, address = fields[0], fields[1]
        if "=" in name:
            raise bad(f"the line must start with a host name, not {name!r}")
        node = magic = None
        attributes: dict[str, str] = {}
        for field in fields[2:]:
            key, sep, value = field.partition("=")
            if not sep or not key:
                raise bad(f"expected key=value, got {field!r}")
            try:
                if key == "node":
                    node = _node(value)
                elif key == "magic":
                    magic = _magic(value)
                elif key in attributes:
                    raise bad(f"{key} given twice")
                else:
                    attributes[key] = value
            except ValueError:
                accepted = (_node if key == "node" else _magic).accepted
                raise bad(f"bad {key} {value!r}: expected {accepted}") from None
        try:
            record = HostRecord(name, address, node, magic, attributes)
        except ValueError:
            raise bad(f"bad address {address!r}: expected an IPv4 or IPv6 address") from None
        for kind, value in (("name", name), ("address", record.address), ("node", node)):
            if value is None:
                continue
            if (kind, value) in seen:
                raise bad(f"{kind} {value} already given on line {seen[(kind, value)]}")
            seen[(kind, value)] = number
        records.append(record)
    return records


@implementer(IHostDirectory)
class FileHostDirectory:
    """
    Hosts from a hosts file.

    @ivar path: the file.
    """

    log = Logger()

    def __init__(self, path: str) -> None:
        """
        Read C{path}.

        @raise DirectoryError: it cannot be read or has a bad line.
        """
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._badStamp: tuple[int, int, int] | None = None
        self._records: list[HostRecord] = []
        self._byAddress: dict[str, HostRecord] = {}
        self._byName: dict[str, HostRecord] = {}
        self._byNode: dict[int, HostRecord] = {}
        self._load(self._stat())

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise DirectoryError(f"{self.path}: cannot read hosts file: {e.strerror}") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self, stamp: tuple[int, int, int]) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                records = parseHosts(f, self.path)
        except OSError as e:
            raise DirectoryError(f"{self.path}: cannot read hosts file: {e.strerror}") from None
        self._records = records
        self._byAddress = {r.address: r for r in records}
        self._byName = {r.name: r for r in records}
        self._byNode = {r.node: r for r in records if r.node is not None}
        self._stamp = stamp

    def _fresh(self) -> None:
        """
        Read the file again if it changed; keep the old hosts if it is bad,
        and say so once per bad version of the file.
        """
        try:
            stamp: tuple[int, int, int] | None = self._stat()
        except DirectoryError as e:
            stamp, error = None, e
        else:
            if stamp == self._stamp or stamp == self._badStamp:
                return
            try:
                self._load(stamp)
            except DirectoryError as e:
                error = e
            else:
                self._badStamp = None
                self.log.info(
                    "hosts file {path} reloaded: {count} hosts",
                    path=self.path,
                    count=len(self._records),
                )
                return
        if self._badStamp != (stamp or _MISSING):
            self._badStamp = stamp or _MISSING
            self.log.error(
                "{error}; still using the previous {count} hosts",
                error=str(error),
                count=len(self._records),
            )

    def lookupAddress(self, address: str) -> defer.Deferred[HostRecord | None]:
        self._fresh()
        try:
            key = normalizeAddress(address)
        except ValueError:
            return defer.succeed(None)
        return defer.succeed(self._byAddress.get(key))

    def lookupName(self, name: str) -> defer.Deferred[HostRecord | None]:
        self._fresh()
        return defer.succeed(self._byName.get(name))

    def lookupNode(self, node: int) -> defer.Deferred[HostRecord | None]:
        self._fresh()
        return defer.succeed(self._byNode.get(node))

    def hosts(self) -> defer.Deferred[list[HostRecord]]:
        self._fresh()
        return defer.succeed(list(self._records))
