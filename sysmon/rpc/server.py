"""
The server side of ONC RPC: dispatch calls to registered programs over UDP
and TCP, with every error answer of RFC 5531.

A procedure handler takes the call's argument bytes and a L{CallContext}
and returns the result bytes (or a Deferred of them).  Arguments that do
not decode (an L{XDRError}) are answered GARBAGE_ARGS; any other exception
SYSTEM_ERR (and logged).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from sysmon.rpc import message as m
from sysmon.rpc.record import RecordReassembler, RecordTooLarge, frame
from sysmon.rpc.xdr import XDRError

__all__ = ["CallContext", "RPCServer", "RPCDatagramProtocol", "RPCStreamFactory"]


@attrs.frozen
class CallContext:
    """
    Where a call came from.

    @ivar host: the caller's address.
    @ivar port: the caller's port.
    @ivar transport: C{"udp"} or C{"tcp"}.
    @ivar cred: the call's credential.
    """

    host: str
    port: int
    transport: str
    cred: m.OpaqueAuth = m.NULL_AUTH

    @property
    def loopback(self) -> bool:
        return self.host.startswith("127.") or self.host in ("::1", "::ffff:127.0.0.1")

    @property
    def privileged(self) -> bool:
        return self.port < 1024


Handler = Callable[[bytes, CallContext], Any]
#: Names the result of a successful call: C{outcome(proc, results)}.
Outcome = Callable[[int, bytes], str]

#: Distinct unregistered (program, version, procedure) triples of a
#: registered program that L{RPCServer.calls} counts one by one; any more
#: are counted together under procedure L{None}, so that a peer sending
#: random numbers cannot grow the table without bound.
MAX_UNKNOWN_PROCEDURES = 16


class RPCServer:
    """
    Programs, versions and procedures, and the dispatch of calls to them.

    @ivar counters: messages by outcome (for logs and metrics), C{success}
        and the names of every error answer, including those to messages
        that are not calls of a registered program (C{not_a_call},
        C{rpc_mismatch}, C{bad_credentials}, C{prog_unavail}).
    @ivar calls: calls to a registered program by C{(prog, vers, proc,
        result)} (for metrics): C{result} is the program's name for the
        result of a successful call (see L{register}; C{success} by
        default), else the error answered: C{garbage_args}, C{system_err},
        C{proc_unavail} or C{prog_mismatch}.  C{proc} is L{None} for the
        unregistered procedures beyond L{MAX_UNKNOWN_PROCEDURES}.
    """

    log = Logger()

    def __init__(self) -> None:
        self.programs: dict[int, dict[int, dict[int, Handler]]] = {}
        self.outcomes: dict[tuple[int, int], Outcome] = {}
        self.counters: Counter[str] = Counter()
        self.calls: Counter[tuple[int, int, int | None, str]] = Counter()
        self._unknown: set[tuple[int, int, int]] = set()

    def register(self, prog: int, vers: int, procedures: dict[int, Handler],
                 outcome: Outcome | None = None) -> None:
        """
        Serve C{procedures} (number -> handler) as version C{vers} of
        program C{prog}.

        @param outcome: names the result of each successful call in
            L{calls}: C{outcome(proc, results)}; C{success} when L{None}.
        """
        self.programs.setdefault(prog, {})[vers] = dict(procedures)
        if outcome is not None:
            self.outcomes[(prog, vers)] = outcome

    def _count(self, call: m.Call, result: str) -> None:
        self.counters[result] += 1
        proc: int | None = call.proc
        if call.proc not in self.programs[call.prog].get(call.vers, {}):
            triple = (call.prog, call.vers, call.proc)
            if triple not in self._unknown:
                if len(self._unknown) >= MAX_UNKNOWN_PROCEDURES:
                    proc = None
                else:
                    self._unknown.add(triple)
        self.calls[(call.prog, call.vers, proc, result)] += 1

    def dispatch(self, data: bytes, host: str, port: int, transport: str) -> defer.Deferred[bytes | None]:
        """
        Answer one message.

        @return: a Deferred firing with the reply bytes, or L{None} when
            nothing must be sent (not a call).
        """
        try:
            call = m.decodeCall(data)
        except m.RPCMismatch as e:
            self.counters["rpc_mismatch"] += 1
            return defer.succeed(m.deniedReply(e.xid, m.RPC_MISMATCH, 2, 2))
        except m.BadCredentials as e:
            self.counters["bad_credentials"] += 1
            return defer.succeed(m.deniedReply(e.xid, m.AUTH_ERROR, authStat=m.AUTH_BADCRED))
        except XDRError:
            self.counters["not_a_call"] += 1
            return defer.succeed(None)
        versions = self.programs.get(call.prog)
        if versions is None:
            self.counters["prog_unavail"] += 1
            return defer.succeed(m.acceptedReply(call.xid, m.PROG_UNAVAIL))
        procedures = versions.get(call.vers)
        if procedures is None:
            self._count(call, "prog_mismatch")
            return defer.succeed(m.acceptedReply(call.xid, m.PROG_MISMATCH, low=min(versions),
                                                 high=max(versions)))
        handler = procedures.get(call.proc)
        if handler is None:
            self._count(call, "proc_unavail")
            return defer.succeed(m.acceptedReply(call.xid, m.PROC_UNAVAIL))
        context = CallContext(host, port, transport, call.cred)
        d = defer.maybeDeferred(handler, call.args, context)
        outcome = self.outcomes.get((call.prog, call.vers))

        def answered(results: bytes) -> bytes:
            self.counters["success"] += 1
            name = "success"
            if outcome is not None:
                try:
                    name = outcome(call.proc, results)
                except Exception:
                    self.log.failure("naming the result of {prog}/{vers}/{proc}",
                                     prog=call.prog, vers=call.vers, proc=call.proc)
            self.calls[(call.prog, call.vers, call.proc, name)] += 1
            return m.acceptedReply(call.xid, m.SUCCESS, results)

        def failed(f: Failure) -> bytes:
            if f.check(XDRError):
                self._count(call, "garbage_args")
                return m.acceptedReply(call.xid, m.GARBAGE_ARGS)
            self._count(call, "system_err")
            self.log.failure("procedure {prog}/{vers}/{proc} failed for {host}:{port}",
                             failure=f, prog=call.prog, vers=call.vers, proc=call.proc,
                             host=host, port=port)
            return m.acceptedReply(call.xid, m.SYSTEM_ERR)

        return d.addCallbacks(answered, failed)


class RPCDatagramProtocol(DatagramProtocol):
    """
    RPC over UDP: one message per datagram.
    """

    def __init__(self, server: RPCServer) -> None:
        self.server = server

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        d = self.server.dispatch(data, addr[0], addr[1], "udp")
        d.addCallback(self._reply, addr)

    def _reply(self, reply: bytes | None, addr: tuple[str, int]) -> None:
        if reply is not None and self.transport is not None:
            try:
                self.transport.write(reply, addr)
            except OSError:
                self.server.counters["send_errors"] += 1


class RPCStreamProtocol(Protocol):
    """
    RPC over TCP: record marking; each record is one call.
    """

    def __init__(self, server: RPCServer, maxRecord: int) -> None:
        self.server = server
        self.records = RecordReassembler(maxRecord)

    def dataReceived(self, data: bytes) -> None:
        try:
            records = self.records.feed(data)
        except RecordTooLarge:
            self.server.counters["record_too_large"] += 1
            self.transport.loseConnection()
            return
        peer = self.transport.getPeer()
        for record in records:
            d = self.server.dispatch(record, peer.host, peer.port, "tcp")
            d.addCallback(self._reply)

    def _reply(self, reply: bytes | None) -> None:
        if reply is not None and self.transport is not None and self.transport.connected:
            self.transport.write(frame(reply))


class RPCStreamFactory(Factory):
    """
    Makes L{RPCStreamProtocol}s.
    """

    def __init__(self, server: RPCServer, maxRecord: int = 64 * 1024) -> None:
        self.server = server
        self.maxRecord = maxRecord

    def buildProtocol(self, addr: Any) -> RPCStreamProtocol:
        return RPCStreamProtocol(self.server, self.maxRecord)
