"""
statd over real sockets on 127.0.0.1: every bad-call answer of the RPC
layer, the NSM procedures and their access rules.
"""

from __future__ import annotations

import os
import socket
import struct

from twisted.internet import defer, protocol, task
from twisted.trial.unittest import TestCase

from sysmon.rpc import message as m
from sysmon.rpc.record import frame
from sysmon.rpc.xdr import Packer, Unpacker
from sysmon.statd import nsm, tap


class Raw(protocol.DatagramProtocol):
    """
    Sends raw datagrams and hands out the replies.
    """

    def __init__(self):
        self.waiting = []
        self.replies = []

    def datagramReceived(self, data, addr):
        if self.waiting:
            self.waiting.pop(0).callback(data)
        else:
            self.replies.append(data)

    def ask(self, data, addr, timeout=5):
        from twisted.internet import reactor

        d = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(data, addr)
        return d.addTimeout(timeout, reactor)


class StreamCollector(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.ended = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.ended.callback(None)


def mon(name=b"localhost", my=b"me", prog=100021, vers=3, proc=16, priv=b"P" * 16):
    return nsm.Mon(nsm.MonId(name, nsm.MyId(my, prog, vers, proc)), priv).pack(Packer()).bytes()


class StatdCase(TestCase):
    timeout = 30

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        options = tap.Options()
        options.parseOptions(["--port", "0", "--addr", "127.0.0.1", "--no-notify",
                              "--state-file", os.path.join(self.dir, "status.db"),
                              "--name", "test.example.org"])
        self.service = tap.makeService(options, reactor)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.addr = ("127.0.0.1", self.service.udpPort)
        self.raw = Raw()
        self.rawPort = reactor.listenUDP(0, self.raw, interface="127.0.0.1")
        self.addCleanup(self.rawPort.stopListening)
        return task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def call(self, proc, args=b"", prog=nsm.PROG, vers=nsm.VERS, rpcvers=2, cred=m.NULL_AUTH):
        data = yield self.raw.ask(m.encodeCall(0x1234, prog, vers, proc, args, cred,
                                               rpcvers=rpcvers), self.addr)
        return m.decodeReply(data)


class BadCallTests(StatdCase):
    """
    The RPC error answers, over UDP.
    """

    @defer.inlineCallbacks
    def test_rpcVersion(self):
        """
        rpcvers 3 -> MSG_DENIED RPC_MISMATCH(2, 2).
        """
        r = yield self.call(nsm.STAT, Packer().string(b"x").bytes(), rpcvers=3)
        self.assertEqual((r.xid, r.accepted, r.stat, r.low, r.high), (0x1234, False, 0, 2, 2))

    @defer.inlineCallbacks
    def test_programVersionProcedure(self):
        """
        Unknown program -> PROG_UNAVAIL; version 2 -> PROG_MISMATCH(1, 1);
        procedure 7 -> PROC_UNAVAIL.
        """
        r = yield self.call(0, prog=100099)
        self.assertEqual((r.accepted, r.stat), (True, m.PROG_UNAVAIL))
        r = yield self.call(0, vers=2)
        self.assertEqual((r.stat, r.low, r.high), (m.PROG_MISMATCH, 1, 1))
        r = yield self.call(7)
        self.assertEqual(r.stat, m.PROC_UNAVAIL)

    @defer.inlineCallbacks
    def test_garbageArgs(self):
        """
        A 1025-byte name, a truncated argument and trailing bytes ->
        GARBAGE_ARGS.
        """
        r = yield self.call(nsm.STAT, Packer().string(b"x" * 1025).bytes())
        self.assertEqual(r.stat, m.GARBAGE_ARGS)
        r = yield self.call(nsm.MON, mon()[:-4])
        self.assertEqual(r.stat, m.GARBAGE_ARGS)
        r = yield self.call(nsm.STAT, Packer().string(b"x").bytes() + b"\0\0\0\0")
        self.assertEqual(r.stat, m.GARBAGE_ARGS)
        r = yield self.call(nsm.NULL, b"\0\0\0\0")
        self.assertEqual(r.stat, m.GARBAGE_ARGS)

    @defer.inlineCallbacks
    def test_badCredential(self):
        """
        An AUTH_SYS credential that does not decode -> AUTH_ERROR.
        """
        r = yield self.call(nsm.NULL, cred=m.OpaqueAuth(m.AUTH_SYS, b"\0\0\0\1"))
        self.assertEqual((r.accepted, r.stat), (False, m.AUTH_ERROR))

    @defer.inlineCallbacks
    def test_authSysAccepted(self):
        """
        A good AUTH_SYS credential is accepted.
        """
        r = yield self.call(nsm.NULL, cred=m.AuthSys(1, b"client", 0, 0, (0,)).toAuth())
        self.assertEqual((r.accepted, r.stat), (True, m.SUCCESS))


class ProcedureTests(StatdCase):
    """
    NSM procedures and their rules.
    """

    @defer.inlineCallbacks
    def test_statAndState(self):
        """
        SM_STAT answers stat_succ with the local state, odd after a start.
        """
        r = yield self.call(nsm.STAT, Packer().string(b"anyhost").bytes())
        u = Unpacker(r.results)
        self.assertEqual(u.int(), nsm.STAT_SUCC)
        state = u.int()
        self.assertEqual(state % 2, 1)

    @defer.inlineCallbacks
    def test_monUnmon(self):
        """
        SM_MON stores the entry (visible in the store), SM_UNMON removes it,
        SM_UNMON_ALL removes every entry of a my_id.
        """
        store = self.service.store
        r = yield self.call(nsm.MON, mon(b"hostA"))
        self.assertEqual(Unpacker(r.results).int(), nsm.STAT_SUCC)
        yield self.call(nsm.MON, mon(b"hostB"))
        yield self.call(nsm.MON, mon(b"hostC", my=b"other"))
        self.assertEqual(sorted(e.monName for e in store.entries.values()),
                         ["hostA", "hostB", "hostC"])
        monId = nsm.MonId(b"hostA", nsm.MyId(b"me", 100021, 3, 16)).pack(Packer()).bytes()
        r = yield self.call(nsm.UNMON, monId)
        self.assertEqual(Unpacker(r.results).int(), store.state)
        r = yield self.call(nsm.UNMON_ALL, nsm.MyId(b"me", 100021, 3, 16).pack(Packer()).bytes())
        self.assertEqual([e.monName for e in store.entries.values()], ["hostC"])

    @defer.inlineCallbacks
    def test_duplicateAndNewPriv(self):
        """
        The same SM_MON twice is one entry; a different priv replaces it.
        """
        yield self.call(nsm.MON, mon(b"h", priv=b"A" * 16))
        yield self.call(nsm.MON, mon(b"h", priv=b"A" * 16))
        yield self.call(nsm.MON, mon(b"h", priv=b"B" * 16))
        entries = list(self.service.store.entries.values())
        self.assertEqual([(e.monName, e.priv) for e in entries], [("h", b"B" * 16)])

    @defer.inlineCallbacks
    def test_badNames(self):
        """
        Names with '/', a leading '.', white space or control characters are
        refused with stat_fail and state -1.
        """
        for name in (b"../etc/passwd", b".hidden", b"a b", b"a\x01b", b""):
            r = yield self.call(nsm.MON, mon(name))
            self.assertEqual((Unpacker(r.results).int(), Unpacker(r.results[4:]).int()),
                             (nsm.STAT_FAIL, -1), name)
        r = yield self.call(nsm.MON, mon(b"ok", my=b"a/b"))
        self.assertEqual(Unpacker(r.results).int(), nsm.STAT_FAIL)
        self.assertEqual(self.service.store.entries, {})

    @defer.inlineCallbacks
    def test_callbackProgram(self):
        """
        Only lockd (100021) with proc 16 or 24 is a callback by default.
        """
        r = yield self.call(nsm.MON, mon(prog=100003, proc=1))
        self.assertEqual(Unpacker(r.results).int(), nsm.STAT_FAIL)
        r = yield self.call(nsm.MON, mon(proc=5))
        self.assertEqual(Unpacker(r.results).int(), nsm.STAT_FAIL)
        r = yield self.call(nsm.MON, mon(proc=24))
        self.assertEqual(Unpacker(r.results).int(), nsm.STAT_SUCC)

    @defer.inlineCallbacks
    def test_simuCrashUnprivilegedIgnored(self):
        """
        SM_SIMU_CRASH from an unprivileged port changes nothing.
        """
        before = self.service.store.state
        r = yield self.call(nsm.SIMU_CRASH)
        self.assertEqual(r.stat, m.SUCCESS)
        self.assertEqual(self.service.store.state, before)

    @defer.inlineCallbacks
    def test_simuCrashPrivileged(self):
        """
        SM_SIMU_CRASH from a reserved port on loopback adds 2 and marks every
        monitored host for notification.
        """
        if os.geteuid() != 0:
            raise self.skipTest("binding a reserved port needs root")
        yield self.call(nsm.MON, mon(b"peer1"))
        before = self.service.store.state
        raw = Raw()
        for port in range(700, 1000):
            try:
                listening = self.reactor.listenUDP(port, raw, interface="127.0.0.1")
                break
            except Exception:
                continue
        self.addCleanup(listening.stopListening)
        data = yield raw.ask(m.encodeCall(5, nsm.PROG, nsm.VERS, nsm.SIMU_CRASH), self.addr)
        self.assertEqual(m.decodeReply(data).stat, m.SUCCESS)
        self.assertEqual(self.service.store.state, before + 2)
        self.assertEqual(self.service.store.toNotify(), ["peer1"])

    def test_nonLoopbackRefused(self):
        """
        SM_MON, SM_UNMON, SM_UNMON_ALL from a non-loopback address are
        refused (stat_fail / nothing removed); SM_STAT is answered.
        """
        rpc = self.service.rpc
        d = rpc.dispatch(m.encodeCall(1, nsm.PROG, nsm.VERS, nsm.MON, mon()), "192.0.2.7", 800,
                         "udp")
        reply = m.decodeReply(self.successResultOf(d))
        self.assertEqual(Unpacker(reply.results).int(), nsm.STAT_FAIL)
        self.assertEqual(self.service.store.entries, {})
        d = rpc.dispatch(m.encodeCall(1, nsm.PROG, nsm.VERS, nsm.STAT,
                                      Packer().string(b"h").bytes()), "192.0.2.7", 800, "udp")
        self.assertEqual(Unpacker(m.decodeReply(self.successResultOf(d)).results).int(),
                         nsm.STAT_SUCC)


class TCPTests(StatdCase):
    """
    RPC over TCP with record marking.
    """

    @defer.inlineCallbacks
    def connect(self, payload):
        collector = StreamCollector()
        endpoint = protocol.ClientCreator(self.reactor, lambda: collector)
        proto = yield endpoint.connectTCP("127.0.0.1", self.service.tcpPort)
        proto.transport.write(payload)
        yield task.deferLater(self.reactor, 0.3, lambda: None)
        proto.transport.loseConnection()
        yield collector.ended
        return collector.data

    def records(self, data):
        out = []
        while data:
            (header,) = struct.unpack(">I", data[:4])
            n = header & 0x7FFFFFFF
            out.append(m.decodeReply(data[4:4 + n]))
            data = data[4 + n:]
        return out

    @defer.inlineCallbacks
    def test_fragmentsAndPipelining(self):
        """
        A call split into fragments, and two pipelined records, are answered.
        """
        call = m.encodeCall(1, nsm.PROG, nsm.VERS, nsm.STAT, Packer().string(b"h").bytes())
        fragmented = struct.pack(">I", 10) + call[:10] + struct.pack(">I", 0x80000000 | (len(call) - 10)) + call[10:]
        second = frame(m.encodeCall(2, nsm.PROG, nsm.VERS, nsm.NULL))
        data = yield self.connect(fragmented + second)
        replies = self.records(data)
        self.assertEqual(sorted(r.xid for r in replies), [1, 2])
        self.assertTrue(all(r.stat == m.SUCCESS for r in replies))

    @defer.inlineCallbacks
    def test_oversizedRecordDropsConnection(self):
        """
        A record over the cap closes the connection without an answer.
        """
        data = yield self.connect(struct.pack(">I", 0x80000000 | 100000) + b"x" * 1000)
        self.assertEqual(data, b"")


class CallCounterTests(StatdCase):
    """
    The RPC server counts the calls to statd by procedure and result (what
    the metrics read).
    """

    @defer.inlineCallbacks
    def test_resultsCounted(self):
        """
        SM_STAT and SM_MON count their NSM result (C{stat_succ} /
        C{stat_fail}), the other procedures C{success}; RPC error answers
        count under their name, with the procedure called; calls to another
        program are not NSM calls: only the message counters have them.
        """
        rpc = self.service.rpc
        self.assertEqual(rpc.calls, {})
        yield self.call(nsm.NULL)
        yield self.call(nsm.STAT, Packer().string(b"anyhost").bytes())
        yield self.call(nsm.MON, mon(b"hostA"))
        yield self.call(nsm.MON, mon(b"hostA"))
        yield self.call(nsm.MON, mon(b"../bad"))
        yield self.call(nsm.UNMON, nsm.MonId(b"hostA", nsm.MyId(b"me", 100021, 3, 16))
                        .pack(Packer()).bytes())
        yield self.call(nsm.STAT, Packer().string(b"x" * 1025).bytes())
        yield self.call(7)
        yield self.call(0, vers=2)
        yield self.call(0, prog=100099)
        P = nsm.PROG
        self.assertEqual(dict(rpc.calls), {
            (P, 1, nsm.NULL, "success"): 1,
            (P, 1, nsm.STAT, "stat_succ"): 1,
            (P, 1, nsm.MON, "stat_succ"): 2,
            (P, 1, nsm.MON, "stat_fail"): 1,
            (P, 1, nsm.UNMON, "success"): 1,
            (P, 1, nsm.STAT, "garbage_args"): 1,
            (P, 1, 7, "proc_unavail"): 1,
            (P, 2, 0, "prog_mismatch"): 1,
        })
        self.assertEqual(rpc.counters["prog_unavail"], 1)

    @defer.inlineCallbacks
    def test_systemError(self):
        """
        A procedure that raises counts as C{system_err}.
        """
        rpc = self.service.rpc

        def broken(entry):
            raise RuntimeError("disk on fire")

        self.patch(self.service.store, "monitor", broken)
        reply = yield rpc.dispatch(m.encodeCall(1, nsm.PROG, nsm.VERS, nsm.MON, mon(b"h")),
                                   "127.0.0.1", 800, "udp")
        self.assertEqual(m.decodeReply(reply).stat, m.SYSTEM_ERR)
        self.assertEqual(dict(rpc.calls), {(nsm.PROG, 1, nsm.MON, "system_err"): 1})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_unknownProceduresBounded(self):
        """
        Unknown procedure numbers are counted one by one up to
        C{MAX_UNKNOWN_PROCEDURES}; any others together under L{None}.
        """
        from sysmon.rpc.server import MAX_UNKNOWN_PROCEDURES

        rpc = self.service.rpc
        extra = 5
        for proc in range(100, 100 + MAX_UNKNOWN_PROCEDURES + extra):
            yield rpc.dispatch(m.encodeCall(1, nsm.PROG, nsm.VERS, proc), "127.0.0.1", 800,
                               "udp")
        yield rpc.dispatch(m.encodeCall(1, nsm.PROG, nsm.VERS, 100), "127.0.0.1", 800, "udp")
        self.assertEqual(len(rpc.calls), MAX_UNKNOWN_PROCEDURES + 1)
        self.assertEqual(rpc.calls[(nsm.PROG, 1, None, "proc_unavail")], extra)
        self.assertEqual(rpc.calls[(nsm.PROG, 1, 100, "proc_unavail")], 2)

    @defer.inlineCallbacks
    def test_outcomeThatRaises(self):
        """
        A program whose result namer raises still gets its reply; the call
        counts as C{success} and the error is logged.
        """
        rpc = self.service.rpc

        def namer(proc, results):
            raise ValueError("cannot name it")

        rpc.register(200000, 1, {0: lambda args, ctx: b"ok!!"}, outcome=namer)
        reply = yield rpc.dispatch(m.encodeCall(1, 200000, 1, 0), "127.0.0.1", 800, "udp")
        self.assertEqual((m.decodeReply(reply).stat, m.decodeReply(reply).results),
                         (m.SUCCESS, b"ok!!"))
        self.assertEqual(dict(rpc.calls), {(200000, 1, 0, "success"): 1})
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
