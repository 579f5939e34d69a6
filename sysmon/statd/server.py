"""
The NSM procedures, the callbacks to the local lock manager and the
reboot notifications, on top of L{sysmon.rpc} and L{StatusStore}.

Access rules (the nfs-utils rules; CERT CA-99-05 and CA-96.09 are why):
SM_MON, SM_UNMON and SM_UNMON_ALL only from a loopback address; SM_SIMU_CRASH
only from loopback and a reserved source port; SM_STAT, SM_NOTIFY and NULL
from anyone.  Callbacks only ever go to 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Sequence

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from sysmon.rpc.client import IPPROTO_UDP, RPCClient, getport
from sysmon.rpc.server import CallContext, RPCServer
from sysmon.rpc.xdr import Packer
from sysmon.statd import nsm
from sysmon.statd.store import Entry, StatusStore

__all__ = ["StatdServer", "NOTIFY_SCHEDULE", "nextOdd", "resultName"]

LOCKD = 100021
LOCKD_PROCS = (16, 24)
#: Seconds between notification rounds: 10 x 5 s, 10 x 60 s, 24 x 1 h.
NOTIFY_SCHEDULE: tuple[float, ...] = (5.0,) * 10 + (60.0,) * 10 + (3600.0,) * 24
CALLBACK_TRIES = 5
CALLBACK_INTERVAL = 5.0


def nextOdd(state: int) -> int:
    """
    The state number after a start: the next odd number above C{state}.
    """
    return state + 2 if state % 2 else state + 1


def _text(name: bytes) -> str:
    return name.decode("latin-1")


def resultName(proc: int, results: bytes) -> str:
    """
    The name of a successful NSM call's result, as the RPC server counts
    it: C{stat_succ} or C{stat_fail} for SM_STAT and SM_MON (the
    C{res_stat} their C{sm_stat_res} begins with), C{success} for the
    others.
    """
    if proc in (nsm.STAT, nsm.MON):
        if results[:4] == b"\0\0\0\0":
            return "stat_succ"
        if results[:4] == b"\0\0\0\1":
            return "stat_fail"
    return "success"


class StatdServer:
    """
    statd's policy.

    @ivar name: this host's name, sent in SM_NOTIFY.
    """

    log = Logger()

    def __init__(self, store: StatusStore, client: RPCClient, reactor: Any, name: str,
                 allowCallbacks: Sequence[int] = (), notify: bool = True,
                 schedule: Sequence[float] = NOTIFY_SCHEDULE,
                 resolveTimeout: float = 2.0) -> None:
        self.store = store
        self.client = client
        self.reactor = reactor
        self.name = name
        self.allowCallbacks = set(allowCallbacks)
        self.notifyAtStart = notify
        self.schedule = tuple(schedule)
        self.resolveTimeout = resolveTimeout
        self._resolved: dict[str, tuple[float, set[str]]] = {}
        self._notifying: dict[str, Any] = {}
        self._done: defer.Deferred[None] | None = None
        self.stopped = False

    # -- life cycle ---------------------------------------------------------

    def register(self, rpc: RPCServer) -> None:
        rpc.register(nsm.PROG, nsm.VERS, {
            nsm.NULL: self.proc_NULL, nsm.STAT: self.proc_STAT, nsm.MON: self.proc_MON,
            nsm.UNMON: self.proc_UNMON, nsm.UNMON_ALL: self.proc_UNMON_ALL,
            nsm.SIMU_CRASH: self.proc_SIMU_CRASH, nsm.NOTIFY: self.proc_NOTIFY,
        }, outcome=resultName)

    def reboot(self) -> defer.Deferred[int]:
        """
        We (re)started: the state becomes the next odd number and every
        monitored host is marked for notification, durably.
        """
        state = nextOdd(self.store.state)
        d = defer.gatherResults([self.store.setState(state), self.store.markAllForNotify()])
        self.log.info("local NSM state number: {state}", state=state)
        return d.addCallback(lambda _: state)

    def stop(self) -> None:
        self.stopped = True
        for call in self._notifying.values():
            if call is not None and call.active():
                call.cancel()
        self._notifying.clear()

    # -- procedures ----------------------------------------------------------

    def proc_NULL(self, args: bytes, ctx: CallContext) -> bytes:
        nsm.decodeVoid(args)
        return b""

    def proc_STAT(self, args: bytes, ctx: CallContext) -> bytes:
        name = nsm.decodeName(args)
        if not nsm.validName(name):
            return nsm.smStatRes(nsm.STAT_FAIL, -1)
        return nsm.smStatRes(nsm.STAT_SUCC, self.store.state)

    def _refuse(self, what: str, ctx: CallContext, why: str) -> None:
        self.log.warn("refusing {what} from {host}:{port}: {why}", what=what, host=ctx.host,
                      port=ctx.port, why=why)

    def proc_MON(self, args: bytes, ctx: CallContext) -> bytes | defer.Deferred[bytes]:
        mon = nsm.decode(nsm.Mon, args)
        assert isinstance(mon, nsm.Mon)
        fail = nsm.smStatRes(nsm.STAT_FAIL, -1)
        my = mon.monId.myId
        if not ctx.loopback:
            self._refuse("SM_MON", ctx, "not from a loopback address")
            return fail
        if not (nsm.validName(mon.monId.monName) and nsm.validName(my.name)):
            self._refuse("SM_MON", ctx, "bad host name")
            return fail
        allowed = (my.prog == LOCKD and my.proc in LOCKD_PROCS) or my.prog in self.allowCallbacks
        if not allowed:
            self._refuse("SM_MON", ctx, f"callback program {my.prog} proc {my.proc} not allowed")
            return fail
        entry = Entry(_text(mon.monId.monName), _text(my.name), my.prog, my.vers, my.proc,
                      mon.priv)
        if self.store.entries.get(entry.key) == entry:
            return nsm.smStatRes(nsm.STAT_SUCC, self.store.state)
        d = self.store.monitor(entry)
        return d.addCallback(lambda _: nsm.smStatRes(nsm.STAT_SUCC, self.store.state))

    def proc_UNMON(self, args: bytes, ctx: CallContext) -> bytes | defer.Deferred[bytes]:
        monId = nsm.decode(nsm.MonId, args)
        assert isinstance(monId, nsm.MonId)
        my = monId.myId
        if not ctx.loopback:
            self._refuse("SM_UNMON", ctx, "not from a loopback address")
            return nsm.smStat(self.store.state)
        key = (_text(monId.monName), _text(my.name), my.prog, my.vers, my.proc)
        d = self.store.unmonitor([key] if key in self.store.entries else [])
        return d.addCallback(lambda _: nsm.smStat(self.store.state))

    def proc_UNMON_ALL(self, args: bytes, ctx: CallContext) -> bytes | defer.Deferred[bytes]:
        my = nsm.decode(nsm.MyId, args)
        assert isinstance(my, nsm.MyId)
        if not ctx.loopback:
            self._refuse("SM_UNMON_ALL", ctx, "not from a loopback address")
            return nsm.smStat(self.store.state)
        name = _text(my.name)
        keys = [k for k in self.store.entries
                if k[1] == name and k[2:] == (my.prog, my.vers, my.proc)]
        d = self.store.unmonitor(keys)
        return d.addCallback(lambda _: nsm.smStat(self.store.state))

    def proc_SIMU_CRASH(self, args: bytes, ctx: CallContext) -> bytes | defer.Deferred[bytes]:
        nsm.decodeVoid(args)
        if not (ctx.loopback and ctx.privileged):
            self._refuse("SM_SIMU_CRASH", ctx, "not from a reserved port on loopback")
            return b""
        state = self.store.state + 2
        self.log.info("SM_SIMU_CRASH from {host}:{port}: state {state}", host=ctx.host,
                      port=ctx.port, state=state)
        d = defer.gatherResults([self.store.setState(state), self.store.markAllForNotify()])

        def done(_: Any) -> bytes:
            if self.notifyAtStart:
                self.notifyAll()
            return b""

        return d.addCallback(done)

    def proc_NOTIFY(self, args: bytes, ctx: CallContext) -> bytes:
        change = nsm.decode(nsm.StatChge, args)
        assert isinstance(change, nsm.StatChge)
        name = _text(change.monName)
        self.log.info("SM_NOTIFY from {host}:{port}: {name} is now in state {state}",
                      host=ctx.host, port=ctx.port, name=name, state=change.state)
        d = self._matching(name, ctx.host)
        d.addCallback(self._changed, change.state)
        d.addErrback(lambda f: self.log.failure("handling SM_NOTIFY from {host}", f,
                                                host=ctx.host))
        return b""

    # -- SM_NOTIFY: who is it, and callbacks ----------------------------------

    def resolve(self, name: str) -> defer.Deferred[set[str]]:
        """
        The addresses of C{name}: asynchronous, bounded by a timeout, cached
        for five minutes; a name that does not resolve has none.
        """
        try:
            return defer.succeed({str(ipaddress.ip_address(name))})
        except ValueError:
            pass
        now = self.reactor.seconds()
        cached = self._resolved.get(name)
        if cached is not None and now - cached[0] < 300:
            return defer.succeed(cached[1])
        d = self.reactor.resolve(name)
        d.addTimeout(self.resolveTimeout, self.reactor)

        def found(address: str) -> set[str]:
            self._resolved[name] = (self.reactor.seconds(), {address})
            return {address}

        def failed(f: Failure) -> set[str]:
            self._resolved[name] = (self.reactor.seconds(), set())
            return set()

        return d.addCallbacks(found, failed)

    def _matching(self, name: str, caller: str) -> defer.Deferred[list[Entry]]:
        lowered = name.lower()
        monNames = sorted({e.monName for e in self.store.entries.values()})
        direct = {m for m in monNames if m.lower() == lowered}
        others = [m for m in monNames if m not in direct]
        lookups = [self.resolve(m).addCallback(lambda addrs, m=m: m if caller in addrs else None)
                   for m in others]
        d = defer.gatherResults(lookups)
        return d.addCallback(lambda found: [e for e in self.store.entries.values()
                                            if e.monName in direct or e.monName in found])

    def _changed(self, entries: list[Entry], state: int) -> None:
        for monName in sorted({e.monName for e in entries}):
            if self.store.hosts.get(monName, (None, False))[0] == state:
                continue
            d = self.store.setHost(monName, state=state)
            for entry in entries:
                if entry.monName == monName:
                    d.addCallback(lambda _, e=entry: self.callback(e, state))

    def callback(self, entry: Entry, state: int, tries: int = CALLBACK_TRIES) -> defer.Deferred[None]:
        """
        Tell the local lock manager (127.0.0.1 only) that C{entry}'s host is
        now in C{state}: status{mon_name, state, priv} to my_prog/my_vers/
        my_proc, after a portmapper lookup; up to 5 tries 5 s apart.
        """
        args = nsm.status(entry.monName.encode("latin-1"), state, entry.priv)
        d = getport(self.client, "127.0.0.1", entry.prog, entry.vers, IPPROTO_UDP)

        def call(port: int) -> defer.Deferred[bytes]:
            if not port:
                raise LookupError(f"program {entry.prog} v{entry.vers} is not registered")
            return self.client.call("127.0.0.1", port, entry.prog, entry.vers, entry.proc, args)

        def done(_: Any) -> None:
            self.log.info("told program {prog} that {name} is in state {state}",
                          prog=entry.prog, name=entry.monName, state=state)

        def failed(f: Failure) -> defer.Deferred[None] | None:
            if tries <= 1 or self.stopped:
                self.log.warn("giving up the callback for {name} to program {prog}: {error}",
                              name=entry.monName, prog=entry.prog, error=f.getErrorMessage())
                return None
            return task.deferLater(self.reactor, CALLBACK_INTERVAL, self.callback, entry, state,
                                   tries - 1)

        return d.addCallback(call).addCallbacks(done, failed)

    # -- our own reboot: SM_NOTIFY the monitored hosts ----------------------

    def notifyAll(self) -> defer.Deferred[None]:
        """
        Notify every host that needs it; the Deferred fires when each is
        answered or given up.
        """
        hosts = [h for h in self.store.toNotify() if h not in self._notifying]
        waits = [self._notify(host, 0) for host in hosts]
        return defer.DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def _notify(self, host: str, attempt: int) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()
        self._notifying[host] = None
        self._attempt(host, attempt, done)
        return done

    def _attempt(self, host: str, attempt: int, done: defer.Deferred[None]) -> None:
        if self.stopped:
            return
        if not self.store.hosts.get(host, (None, False))[1]:
            self._notifying.pop(host, None)
            done.callback(None)
            return
        d = self.resolve(host)

        def send(addresses: set[str]) -> defer.Deferred[Any]:
            if not addresses:
                raise LookupError(f"{host} does not resolve")
            address = sorted(addresses)[0]
            names = [self.name]
            if "." in self.name:
                names.append(self.name.split(".", 1)[0])
            port = getport(self.client, address, nsm.PROG, nsm.VERS, IPPROTO_UDP)

            def notify(statdPort: int) -> defer.Deferred[Any]:
                if not statdPort:
                    raise LookupError(f"no statd registered on {host}")
                calls = [self.client.call(address, statdPort, nsm.PROG, nsm.VERS, nsm.NOTIFY,
                                          nsm.StatChge(n.encode("latin-1"), self.store.state)
                                          .pack(Packer()).bytes())
                         for n in names]
                return defer.gatherResults(calls, consumeErrors=True)

            return port.addCallback(notify)

        def answered(_: Any) -> defer.Deferred[None]:
            self.log.info("notified {host} of our state {state}", host=host, state=self.store.state)
            self._notifying.pop(host, None)
            return self.store.setHost(host, notify=False).addCallback(done.callback)

        def failed(f: Failure) -> None:
            if self.stopped:
                return
            if attempt >= len(self.schedule):
                self.log.warn("giving up notifying {host}: {error}", host=host,
                              error=f.getErrorMessage())
                self._notifying.pop(host, None)
                done.callback(None)
                return
            self._notifying[host] = self.reactor.callLater(
                self.schedule[attempt], self._attempt, host, attempt + 1, done)

        d.addCallback(send).addCallbacks(answered, failed)
