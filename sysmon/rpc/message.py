"""
RPC version 2 messages (RFC 5531): calls and replies, AUTH_NONE and
AUTH_SYS credentials.  Pure codec.
"""

from __future__ import annotations

from typing import Final

import attrs

from sysmon.rpc.xdr import Packer, Unpacker, XDRError

__all__ = [
    "AuthSys",
    "Call",
    "NotACall",
    "OpaqueAuth",
    "Reply",
    "RPCMismatch",
    "acceptedReply",
    "decodeCall",
    "decodeReply",
    "deniedReply",
    "encodeCall",
]

CALL: Final = 0
REPLY: Final = 1
RPC_VERSION: Final = 2

AUTH_NONE: Final = 0
AUTH_SYS: Final = 1
MAX_AUTH: Final = 400

MSG_ACCEPTED: Final = 0
MSG_DENIED: Final = 1

SUCCESS: Final = 0
PROG_UNAVAIL: Final = 1
PROG_MISMATCH: Final = 2
PROC_UNAVAIL: Final = 3
GARBAGE_ARGS: Final = 4
SYSTEM_ERR: Final = 5

RPC_MISMATCH: Final = 0
AUTH_ERROR: Final = 1
AUTH_BADCRED: Final = 1


class NotACall(XDRError):
    """
    The message is not an RPC call (a reply, or garbage): no answer.
    """


class RPCMismatch(XDRError):
    """
    An RPC call of another RPC version: answer RPC_MISMATCH.

    @ivar xid: the call's xid.
    """

    def __init__(self, xid: int, version: int) -> None:
        self.xid = xid
        super().__init__(f"RPC version {version}")


class BadCredentials(XDRError):
    """
    An RPC call with an unreadable credential: answer AUTH_ERROR(BADCRED).
    """

    def __init__(self, xid: int, why: str) -> None:
        self.xid = xid
        super().__init__(why)


@attrs.frozen
class OpaqueAuth:
    flavor: int = AUTH_NONE
    body: bytes = b""


NULL_AUTH = OpaqueAuth()


@attrs.frozen
class AuthSys:
    """
    An AUTH_SYS credential body.
    """

    stamp: int
    machinename: bytes
    uid: int
    gid: int
    gids: tuple[int, ...] = ()

    def toAuth(self) -> OpaqueAuth:
        p = Packer().uint(self.stamp).string(self.machinename).uint(self.uid).uint(self.gid)
        p.array(list(self.gids), p.uint)
        return OpaqueAuth(AUTH_SYS, p.bytes())

    @classmethod
    def fromAuth(cls, auth: OpaqueAuth) -> AuthSys:
        u = Unpacker(auth.body)
        value = cls(u.uint(), u.string(255), u.uint(), u.uint(), tuple(u.array(u.uint, 16)))
        u.done()
        return value


@attrs.frozen
class Call:
    """
    An RPC call; C{args} is the undecoded argument bytes.
    """

    xid: int
    prog: int
    vers: int
    proc: int
    cred: OpaqueAuth
    verf: OpaqueAuth
    args: bytes


def _auth(u: Unpacker) -> OpaqueAuth:
    flavor = u.uint()
    return OpaqueAuth(flavor, u.opaque(MAX_AUTH))


def decodeCall(data: bytes | memoryview) -> Call:
    """
    @raise NotACall: not a call.
    @raise RPCMismatch: a call of another RPC version.
    @raise BadCredentials: the credential or verifier does not decode.
    """
    u = Unpacker(data)
    try:
        xid = u.uint()
        if u.uint() != CALL:
            raise NotACall("not a call")
        version = u.uint()
    except XDRError as e:
        raise NotACall(str(e)) from None
    if version != RPC_VERSION:
        raise RPCMismatch(xid, version)
    try:
        prog, vers, proc = u.uint(), u.uint(), u.uint()
    except XDRError as e:
        raise NotACall(str(e)) from None
    try:
        cred, verf = _auth(u), _auth(u)
        if cred.flavor == AUTH_SYS:
            AuthSys.fromAuth(cred)
    except XDRError as e:
        raise BadCredentials(xid, str(e)) from None
    return Call(xid, prog, vers, proc, cred, verf, bytes(u.rest()))


def encodeCall(xid: int, prog: int, vers: int, proc: int, args: bytes = b"",
               cred: OpaqueAuth = NULL_AUTH, verf: OpaqueAuth = NULL_AUTH,
               rpcvers: int = RPC_VERSION) -> bytes:
    p = Packer().uint(xid).uint(CALL).uint(rpcvers).uint(prog).uint(vers).uint(proc)
    p.uint(cred.flavor).opaque(cred.body).uint(verf.flavor).opaque(verf.body)
    return p.raw(args).bytes()


def acceptedReply(xid: int, stat: int = SUCCESS, results: bytes = b"",
                  low: int = 0, high: int = 0) -> bytes:
    p = Packer().uint(xid).uint(REPLY).uint(MSG_ACCEPTED).uint(AUTH_NONE).opaque(b"")
    p.uint(stat)
    if stat == SUCCESS:
        p.raw(results)
    elif stat == PROG_MISMATCH:
        p.uint(low).uint(high)
    return p.bytes()


def deniedReply(xid: int, stat: int, low: int = RPC_VERSION, high: int = RPC_VERSION,
                authStat: int = AUTH_BADCRED) -> bytes:
    p = Packer().uint(xid).uint(REPLY).uint(MSG_DENIED).uint(stat)
    if stat == RPC_MISMATCH:
        p.uint(low).uint(high)
    else:
        p.uint(authStat)
    return p.bytes()


@attrs.frozen
class Reply:
    """
    A decoded reply.

    @ivar accepted: MSG_ACCEPTED (L{True}) or MSG_DENIED.
    @ivar stat: accept_stat or reject_stat.
    @ivar results: the result bytes (SUCCESS), or b"".
    @ivar low: PROG_MISMATCH / RPC_MISMATCH low version.
    @ivar high: ... high version.
    """

    xid: int
    accepted: bool
    stat: int
    results: bytes = b""
    low: int = 0
    high: int = 0


def decodeReply(data: bytes | memoryview) -> Reply:
    """
    @raise XDRError: not a well-formed reply.
    """
    u = Unpacker(data)
    xid = u.uint()
    if u.uint() != REPLY:
        raise XDRError("not a reply")
    status = u.uint()
    if status == MSG_ACCEPTED:
        _auth(u)
        stat = u.uint()
        if stat == SUCCESS:
            return Reply(xid, True, stat, bytes(u.rest()))
        if stat == PROG_MISMATCH:
            return Reply(xid, True, stat, b"", u.uint(), u.uint())
        return Reply(xid, True, stat)
    if status == MSG_DENIED:
        stat = u.uint()
        if stat == RPC_MISMATCH:
            return Reply(xid, False, stat, b"", u.uint(), u.uint())
        return Reply(xid, False, stat, b"", u.uint())
    raise XDRError(f"reply status {status}")
