"""
NSM (program 100024 version 1) types: a pure codec over L{sysmon.rpc.xdr}.
"""

from __future__ import annotations

from typing import Final

import attrs

from sysmon.rpc.xdr import Packer, Unpacker, XDRError

__all__ = ["Mon", "MonId", "MyId", "StatChge", "validName"]

PROG: Final = 100024
VERS: Final = 1
MAXSTRLEN: Final = 1024
PRIV_SIZE: Final = 16

NULL: Final = 0
STAT: Final = 1
MON: Final = 2
UNMON: Final = 3
UNMON_ALL: Final = 4
SIMU_CRASH: Final = 5
NOTIFY: Final = 6

STAT_SUCC: Final = 0
STAT_FAIL: Final = 1


def validName(name: bytes) -> bool:
    """
    A host name a peer may give: not empty, no '/', NUL, control characters
    or white space, not starting with '.'.
    """
    if not name or name.startswith(b"."):
        return False
    return not any(c <= 0x20 or c == 0x7F or c == 0x2F for c in name)


@attrs.frozen
class MyId:
    name: bytes
    prog: int
    vers: int
    proc: int

    def pack(self, p: Packer) -> Packer:
        return p.string(self.name).int(self.prog).int(self.vers).int(self.proc)

    @classmethod
    def unpack(cls, u: Unpacker) -> MyId:
        return cls(u.string(MAXSTRLEN), u.int(), u.int(), u.int())


@attrs.frozen
class MonId:
    monName: bytes
    myId: MyId

    def pack(self, p: Packer) -> Packer:
        return self.myId.pack(p.string(self.monName))

    @classmethod
    def unpack(cls, u: Unpacker) -> MonId:
        return cls(u.string(MAXSTRLEN), MyId.unpack(u))


@attrs.frozen
class Mon:
    monId: MonId
    priv: bytes

    def pack(self, p: Packer) -> Packer:
        return self.monId.pack(p).fopaque(PRIV_SIZE, self.priv)

    @classmethod
    def unpack(cls, u: Unpacker) -> Mon:
        return cls(MonId.unpack(u), u.fopaque(PRIV_SIZE))


@attrs.frozen
class StatChge:
    monName: bytes
    state: int

    def pack(self, p: Packer) -> Packer:
        return p.string(self.monName).int(self.state)

    @classmethod
    def unpack(cls, u: Unpacker) -> StatChge:
        return cls(u.string(MAXSTRLEN), u.int())


def decode(kind: type, args: bytes) -> object:
    """
    Decode C{args} as C{kind}, all of it.

    @raise XDRError: it does not decode, or bytes are left over.
    """
    u = Unpacker(args)
    value = kind.unpack(u)
    u.done()
    return value


def decodeName(args: bytes) -> bytes:
    u = Unpacker(args)
    name = u.string(MAXSTRLEN)
    u.done()
    return name


def decodeVoid(args: bytes) -> None:
    if args:
        raise XDRError(f"{len(args)} bytes for a void argument")


def smStatRes(result: int, state: int) -> bytes:
    return Packer().int(result).int(state).bytes()


def smStat(state: int) -> bytes:
    return Packer().int(state).bytes()


def status(monName: bytes, state: int, priv: bytes) -> bytes:
    """
    The callback's argument: C{struct status {mon_name, state, priv}}.
    """
    return Packer().string(monName).int(state).fopaque(PRIV_SIZE, priv).bytes()
