"""
The client side of ONC RPC over UDP: xids, timeouts, retries; optionally
from a reserved port.  Plus the portmapper (program 100000 v2) calls.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from twisted.internet import defer, error
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from sysmon.rpc import message as m
from sysmon.rpc.xdr import Packer, Unpacker, XDRError

__all__ = ["RPCClient", "RPCError", "listenClient", "PMAP_PROG", "getport", "pmapSet",
           "pmapUnset", "IPPROTO_TCP", "IPPROTO_UDP"]

PMAP_PROG = 100000
PMAP_VERS = 2
PMAP_PORT = 111
PMAPPROC_SET = 1
PMAPPROC_UNSET = 2
PMAPPROC_GETPORT = 3
IPPROTO_TCP = 6
IPPROTO_UDP = 17


class RPCError(Exception):
    """
    The call was answered with an error (or not at all: C{reply} L{None}).
    """

    def __init__(self, reply: m.Reply | None, why: str) -> None:
        self.reply = reply
        super().__init__(why)


class RPCClient(DatagramProtocol):
    """
    Sends calls from one UDP socket and matches replies by xid.

    @ivar timeout: seconds before a call is sent again.
    @ivar retries: sends after the first before giving up.
    """

    log = Logger()

    def __init__(self, reactor: Any, timeout: float = 1.0, retries: int = 3) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.retries = retries
        self._xids = itertools.count(int.from_bytes(os.urandom(3), "big") << 4)
        self._pending: dict[int, tuple[defer.Deferred[bytes], Any]] = {}

    def call(self, host: str, port: int, prog: int, vers: int, proc: int, args: bytes = b"",
             cred: m.OpaqueAuth = m.NULL_AUTH) -> defer.Deferred[bytes]:
        """
        Call C{prog/vers/proc} at C{host:port}.

        @return: a Deferred firing with the result bytes, or failing with
            L{RPCError} (an error reply, or no reply after the retries).
        """
        xid = next(self._xids) & 0xFFFFFFFF
        data = m.encodeCall(xid, prog, vers, proc, args, cred)
        d: defer.Deferred[bytes] = defer.Deferred(lambda _: self._forget(xid))
        self._pending[xid] = (d, None)
        self._send(xid, data, (host, port), self.retries)
        return d

    def _send(self, xid: int, data: bytes, addr: tuple[str, int], left: int) -> None:
        entry = self._pending.get(xid)
        if entry is None:
            return
        try:
            self.transport.write(data, addr)
        except OSError as e:
            self.log.debug("cannot send to {addr}: {error}", addr=addr, error=e)
        if left > 0:
            timer = self.reactor.callLater(self.timeout, self._send, xid, data, addr, left - 1)
        else:
            timer = self.reactor.callLater(self.timeout, self._expire, xid, addr)
        self._pending[xid] = (entry[0], timer)

    def _expire(self, xid: int, addr: tuple[str, int]) -> None:
        entry = self._pending.pop(xid, None)
        if entry is not None:
            entry[0].errback(RPCError(None, f"no answer from {addr[0]}:{addr[1]}"))

    def _forget(self, xid: int) -> None:
        entry = self._pending.pop(xid, None)
        if entry is not None and entry[1] is not None and entry[1].active():
            entry[1].cancel()

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = m.decodeReply(data)
        except XDRError:
            return
        entry = self._pending.pop(reply.xid, None)
        if entry is None:
            return
        d, timer = entry
        if timer is not None and timer.active():
            timer.cancel()
        if reply.accepted and reply.stat == m.SUCCESS:
            d.callback(reply.results)
        else:
            kind = "accepted" if reply.accepted else "denied"
            d.errback(RPCError(reply, f"{addr[0]}:{addr[1]} answered {kind} status {reply.stat}"))

    def stop(self) -> None:
        for xid in list(self._pending):
            d, timer = self._pending.pop(xid)
            if timer is not None and timer.active():
                timer.cancel()
            d.errback(RPCError(None, "client stopped"))


def listenClient(reactor: Any, reserved: bool = False, interface: str = "",
                 timeout: float = 1.0, retries: int = 3) -> tuple[RPCClient, Any]:
    """
    An L{RPCClient} on its own UDP port; from a reserved port (< 1024, as
    lockd and rpcbind want from local callers) when asked and allowed.

    @return: the client and its listening port.
    """
    client = RPCClient(reactor, timeout, retries)
    if reserved and os.geteuid() == 0:
        start = 600 + int.from_bytes(os.urandom(2), "big") % 400
        for port in itertools.chain(range(start, 1024), range(600, start)):
            try:
                return client, reactor.listenUDP(port, client, interface=interface)
            except error.CannotListenError:
                continue
    return client, reactor.listenUDP(0, client, interface=interface)


def _pmap(prog: int, vers: int, prot: int, port: int) -> bytes:
    return Packer().uint(prog).uint(vers).uint(prot).uint(port).bytes()


def _bool(results: bytes) -> bool:
    u = Unpacker(results)
    return u.bool()


def pmapSet(client: RPCClient, prog: int, vers: int, prot: int, port: int,
            host: str = "127.0.0.1") -> defer.Deferred[bool]:
    d = client.call(host, PMAP_PORT, PMAP_PROG, PMAP_VERS, PMAPPROC_SET,
                    _pmap(prog, vers, prot, port))
    return d.addCallback(_bool)


def pmapUnset(client: RPCClient, prog: int, vers: int,
              host: str = "127.0.0.1") -> defer.Deferred[bool]:
    d = client.call(host, PMAP_PORT, PMAP_PROG, PMAP_VERS, PMAPPROC_UNSET,
                    _pmap(prog, vers, 0, 0))
    return d.addCallback(_bool)


def getport(client: RPCClient, host: str, prog: int, vers: int,
            prot: int = IPPROTO_UDP) -> defer.Deferred[int]:
    """
    PMAPPROC_GETPORT at C{host}:111; 0 means not registered.
    """
    d = client.call(host, PMAP_PORT, PMAP_PROG, PMAP_VERS, PMAPPROC_GETPORT,
                    _pmap(prog, vers, prot, 0))
    return d.addCallback(lambda results: Unpacker(results).uint())

