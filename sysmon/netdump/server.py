"""
The netdump server's policy: one session per crashed client, a state machine
driven by the client's replies and by a clock.

A session goes::

    checking ──> script ──> handshake/info ──> space ──> memory ──> showstate ──> finished
       │ (bad magic: forgotten, no reply)         │           │
       └─> rebooting (too many dumps, refused by netdump-crash, no space)

 - B{checking}: secure mode compares the magic of the client's START with
   C{<dumpdir>/magic/<ip>} (or the host directory).  Unknown or wrong: no
   reply at all, one warning a minute.
 - B{script}: the crash directory is made and C{netdump-crash <ip> <dir>}
   runs; a non-zero exit means no dump, the client is rebooted.
 - B{info}: START_NETDUMP_ACK with version 5, then page size, number of
   pages and registers, one request at a time with timeout and retries.
 - B{space}: free space must hold the dump, else C{netdump-nospace}.
 - B{memory}: up to C{window} SEND_MEM requests in flight.  The client
   answers strictly in order, so a reply to a later request proves that an
   earlier page's missing fragments were lost: that page is asked for again
   at once.  A page whose fragments do not all arrive within the timeout is
   asked for again.  RESERVED replies skip holes.
 - B{showstate}: the vmcore is complete (fsynced, renamed); SHOW_STATE asks
   the client to print its state to the console log.
 - B{finished}: dump.json, C{netdump-reboot <ip> <dir>}, then COMM_REBOOT a
   few times, and the session is forgotten.

A client silent through all retries is declared gone: its dump stays
C{vmcore-incomplete}, dump.json says so, its memory is released.
"""

from __future__ import annotations

import os
import struct
import time
from collections import Counter, OrderedDict
from typing import Any, Callable

import attrs
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from sysmon.children import ChildRunner, UnsafeScript, checkScript
from sysmon.netdump import wire
from sysmon.netdump.console import ConsoleStreams
from sysmon.netdump.elf import CoreLayout, layoutFor, mergeRanges
from sysmon.netdump.store import ConsoleLogs, DumpStore, Journal, PageWriter, Vmcore, writeJSON
from sysmon.netdump.wire import COMM, REPLY, StartInfo, WireError
from sysmon.ratelimit import Once

__all__ = ["NetdumpServer", "ServerSettings", "Session"]

_HEADER = struct.Struct(">BIII")
_REQUEST = struct.Struct(">QIIII")
FRAGMENT = wire.FRAGMENT_SIZE
MAX_PAGE_SIZE = 256 * 1024
#: Completed, contiguous pages written with one system call.
BATCH_PAGES = 128
#: Batches a session may have queued for the writer before it stops asking
#: for more pages (back-pressure from a slow disk).
MAX_WRITING = 16


@attrs.frozen
class ServerSettings:
    """
    The server's policy knobs (from tap.py's options).

    @ivar window: SEND_MEM requests in flight per client.
    @ivar timeout: seconds before a request is sent again.
    @ivar retries: timeouts in a row, with the client silent, before it is
        declared gone.
    @ivar concurrent: dumps at once; more clients are rebooted undumped.
    @ivar secure: check the client's magic.
    @ivar spaceCheck: check free space before dumping.
    @ivar scriptTimeout: seconds a script may run.
    @ivar rebootCount: how many COMM_REBOOT requests are sent.
    @ivar rebootInterval: seconds between them.
    @ivar quiet: after REPLY_SHOW_STATE, seconds without console text
        before the state text is taken as complete.
    """

    window: int = 64
    timeout: float = 1.0
    retries: int = 20
    concurrent: int = 4
    secure: bool = True
    spaceCheck: bool = True
    scriptTimeout: float = 60.0
    rebootCount: int = 3
    rebootInterval: float = 0.5
    quiet: float = 1.0
    magicWarnInterval: float = 60.0
    startScriptInterval: float = 10.0


class _Page:
    """
    One SEND_MEM request in flight.
    """

    __slots__ = ("pfn", "sent", "got", "buf")

    def __init__(self, pfn: int, sent: float) -> None:
        self.pfn = pfn
        self.sent = sent
        self.got = 0
        self.buf: bytearray | None = None


class Session:
    """
    One client's dump.

    @ivar ip: the client's address.
    @ivar port: the port its START came from; requests go there, replies
        from anywhere else are ignored.
    @ivar state: where it is (see the module docstring).
    @ivar outcome: complete, incomplete, no-space, refused-by-script,
        too-many-dumps, write-error, bad-client.
    """

    def __init__(self, ip: str, port: int, start: StartInfo, now: float) -> None:
        self.ip = ip
        self.port = port
        self.start = start
        self.magic = start.magic or 0
        self.machine = start.machine or wire.EM_386
        self.state = "checking"
        self.outcome = "incomplete"
        self.reason = ""
        self.directory: str | None = None
        self.journal: Journal | None = None
        self.vmcore: Vmcore | None = None
        self.layout: CoreLayout | None = None
        self.registers = b""
        self.totalRam = 0
        self.pageSize = 0
        self.nrPages = 0
        self.nr = 1
        self.startedAt = now
        self.memoryAt = now
        self.endedAt: float | None = None
        self.lastHeard = now
        # datagrams heard, counted on the hot path; the timer turns a change
        # into lastHeard (cheaper than reading the clock per datagram)
        self.heard = 0
        self.heardSeen = 0
        self.lastLog = 0.0
        # one-at-a-time requests: (nr, command, arg, sent, tries)
        self.waiting: tuple[int, int, int, float, int] | None = None
        self.silent = 0
        # memory phase
        self.outstanding: OrderedDict[int, _Page] = OrderedDict()
        self.cursor = 0
        # completed pages waiting to be written together: they are
        # contiguous from batchStart
        self.batch: list[bytearray] = []
        self.batchStart = 0
        self.writing = 0
        self.closeWhenWritten = False
        self.written = 0
        self.zeroPages = 0
        self.rerequests = 0
        self.nextProgress = 10
        self.timer: Any = None
        self.showStateReplied = False
        self.resumed = False
        self.spaceTried = False
        self.acked = False
        self.zeroPage = b""

    @property
    def dumping(self) -> bool:
        return self.state not in ("checking", "rebooting", "finished")

    def nextNr(self) -> int:
        nr = self.nr
        self.nr = nr + 1 if nr < 0xFFFFFFFF else 1
        return nr


class NetdumpServer:
    """
    The sessions of every client, and console text.

    @ivar counters: datagrams by fate (for logs and metrics).
    @ivar finished: dumps that ended, by outcome (C{complete},
        C{incomplete}, C{no-space}, ...: L{Session.outcome}), for metrics.
    @ivar pagesReceived: memory pages received into vmcores by this run:
        written to disk, or all zeros and left as a hole of the sparse file.
    @ivar bytesReceived: the bytes of those pages (pages times page size).
    @ivar consoleLines: lines of console text (netconsole, and netdump's
        console/oops stream) written to the console logs: newlines counted.
    """

    log = Logger()

    def __init__(
        self,
        store: DumpStore,
        settings: ServerSettings = ServerSettings(),
        reactor: Any = None,
        runner: ChildRunner | None = None,
        freeSpace: Callable[[str], int] | None = None,
        directory: Any = None,
        deferToThread: Callable[..., defer.Deferred] | None = None,
        writer: PageWriter | None = None,
    ) -> None:
        """
        @param freeSpace: bytes free for a crash directory (injected by
            tests); by default the file system's C{f_bavail * f_frsize}.
        @param directory: an L{IHostDirectory} consulted for magics after
            the magic/ files, or L{None}.
        @param deferToThread: runs blocking calls (fsync) off the reactor
            thread; tests pass a synchronous one.
        @param writer: the L{PageWriter} (a threaded one by default).
        """
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.store = store
        self.settings = settings
        self.runner = runner or ChildRunner(reactor)
        self.freeSpace = freeSpace or (lambda path: store.freeBytes())
        self.directory = directory
        self.deferToThread = deferToThread or (
            lambda f, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a)
        )
        self.writer = writer or PageWriter(reactor)
        self.consoleLogs = ConsoleLogs(store.root)
        self.streams = ConsoleStreams()
        self.sessions: dict[str, Session] = {}
        self.counters: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.pagesReceived = 0
        self.bytesReceived = 0
        self.consoleLines = 0
        self._rebooting: dict[str, tuple[Session, float]] = {}
        self._warned = Once(self.settings.magicWarnInterval)
        self._started = Once(self.settings.startScriptInterval)
        self._pending: set[defer.Deferred[Any]] = set()
        self._console = None
        self.send: Callable[[bytes, tuple[str, int]], None] = lambda data, addr: None
        self.running = False

    # -- life cycle -----------------------------------------------------------

    def start(self, send: Callable[[bytes, tuple[str, int]], None]) -> None:
        """
        Begin: requests go out through C{send(data, (ip, port))}; dumps
        that were in progress when the server stopped are resumed.
        """
        self.send = send
        self.running = True
        self.store.prepare()
        for path in self.store.journals():
            self._resume(path)
        self._consoleTick()

    def stop(self) -> defer.Deferred[None]:
        """
        Stop every timer and child.  Dumps in progress keep their journal,
        so the next start resumes them.
        """
        self.running = False
        self.log.info(
            "netdump stopping with {active} dumps in progress (they resume at the next "
            "start); datagram counters: {counters}",
            active=len(self.sessions), counters=dict(self.counters),
        )
        for session in list(self.sessions.values()):
            self._cancelTimer(session)
            if session.batch and session.state == "memory":
                self._flush(session)
        for session, _ in self._rebooting.values():
            self._cancelTimer(session)
        self._rebooting.clear()
        if self._console is not None and self._console.active():
            self._console.cancel()
        pending = list(self._pending)
        d = self.writer.stop()

        def close(_: Any) -> defer.Deferred[Any]:
            # Every page written so far is marked now; release the files.
            for session in list(self.sessions.values()):
                if session.vmcore is not None:
                    session.vmcore.close()
                if session.journal is not None:
                    session.journal.close()
            self.sessions.clear()
            self.consoleLogs.close()
            return self.runner.stopAll()

        d.addCallback(close)
        d.addCallback(lambda _: defer.DeferredList(pending, consumeErrors=True))
        d.addCallback(lambda _: None)
        return d

    def _track(self, d: defer.Deferred[Any], session: Session | None = None) -> defer.Deferred[Any]:
        """
        Keep C{d} until it fires (so C{stop} can wait for it); a failure in
        its callbacks is logged and ends C{session}'s dump instead of leaving
        it stuck.
        """
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        def failed(f: Failure) -> None:
            self.log.failure("internal error", failure=f)
            self.counters["errors"] += 1
            if session is not None and self.sessions.get(session.ip) is session:
                session.reason = f.getErrorMessage()
                self._finish(session, "error")

        return d.addErrback(failed).addBoth(done)

    def _save(self, session: Session, **changes: Any) -> None:
        """
        Update the session's restart journal; a journal that cannot be
        written costs restart safety, not the dump.
        """
        if session.journal is None:
            return
        try:
            session.journal.save(**changes)
        except OSError as e:
            self.log.error("cannot update the restart journal of {ip}: {error}",
                           ip=session.ip, error=e.strerror)

    def now(self) -> float:
        return self.reactor.seconds()

    # -- datagrams ------------------------------------------------------------------

    def memReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        A REPLY_MEM datagram (a page fragment): the hot path.
        """
        session = self.sessions.get(addr[0])
        if session is None or session.port != addr[1] or session.state != "memory":
            self._foreign(session, addr, REPLY.MEM)
            return
        session.heard += 1
        version, nr, code, info = _HEADER.unpack_from(data)
        self._memReply(session, nr, info, data)

    def replyReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        A datagram that L{wire.classify} called a reply.
        """
        version, nr, code, info = _HEADER.unpack_from(data)
        ip = addr[0]
        if code == REPLY.MEM:
            self.memReceived(data, addr)
            return
        if code == REPLY.LOG:
            self._logReply(ip, addr[1], info, data[wire.HEADER_SIZE :])
            return
        try:
            reply = wire.Reply.fromBytes(data)
        except WireError as e:
            self.counters["malformed"] += 1
            self.log.debug("malformed reply from {ip}:{port}: {error}", ip=ip, port=addr[1],
                           error=str(e))
            return
        if code == REPLY.START_NETDUMP:
            self._startReceived(reply, addr)
            return
        session = self.sessions.get(ip)
        if session is None or session.port != addr[1]:
            self._foreign(session, addr, code)
            return
        session.lastHeard = self.now()
        handler = getattr(self, "reply_" + REPLY.NAMES[code], None)
        if handler is None:
            self.counters["unexpected"] += 1
            self.log.info(
                "unexpected {code} reply from {ip}:{port} ignored",
                code=REPLY.NAMES[code], ip=ip, port=addr[1],
            )
            return
        handler(session, reply)

    def _foreign(self, session: Session | None, addr: tuple[str, int], code: int) -> None:
        if session is None:
            self.counters["no_session"] += 1
        elif session.port != addr[1]:
            self.counters["wrong_peer"] += 1
        else:
            self.counters["stale"] += 1

    def consoleReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        A netconsole datagram (plain or extended).
        """
        self.counters["console"] += 1
        out = self.streams.netconsole(addr[0], addr[1], data, self.now())
        self._consoleOut(addr[0], out.text, out.booted, False)

    def requestReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        A request (another server's traffic): ignored.
        """
        self.counters["foreign_request"] += 1

    def _logReply(self, ip: str, port: int, offset: int, text: bytes) -> None:
        self.counters["log"] += 1
        session = self.sessions.get(ip)
        now = self.now()
        if session is not None:
            session.lastLog = now
        out = self.streams.logChunk(ip, port, offset, text, now)
        self._consoleOut(ip, out.text, out.booted, out.logStart)

    def _consoleOut(self, ip: str, text: bytes, booted: bool, logStart: bool) -> None:
        active = ip in self.sessions
        if booted and not active:
            self.consoleLogs.markBoot(ip)
        self._appendConsole(ip, text)
        if logStart and not active:
            if self._started(ip, self.now()):
                self.log.info("{ip} started its netdump log stream (booted)", ip=ip)
                self._track(self.runScript("netdump-start", ip))

    def _appendConsole(self, ip: str, text: bytes) -> None:
        self.consoleLines += text.count(b"\n")
        self.consoleLogs.append(ip, text)

    def _consoleTick(self) -> None:
        for ip, text in self.streams.tick(self.now()).items():
            self._appendConsole(ip, text)
        if self.running:
            self._console = self.reactor.callLater(1.0, self._consoleTick)

    # -- scripts ----------------------------------------------------------------

    def runScript(self, name: str, *args: str) -> defer.Deferred[int | None]:
        """
        Run C{<dumpdir>/scripts/<name>} with C{args}.

        @return: a Deferred firing with its exit code (-1 when killed or
            timed out), or L{None} when there is no script or it was refused
            as unsafe (logged).
        """
        path = self.store.script(name)
        if not os.path.lexists(path):
            return defer.succeed(None)
        try:
            checkScript(path)
        except UnsafeScript as e:
            self.log.error("{error}", error=str(e))
            self.counters["scripts_refused"] += 1
            return defer.succeed(None)
        self.log.info("running {script} {args}", script=name, args=" ".join(args))
        d = self.runner.run([path, *args], path=self.store.root,
                            timeout=self.settings.scriptTimeout)

        def done(result: Any) -> int:
            if not result.succeeded:
                self.log.warn(
                    "{script} {args} {outcome}; output: {output}",
                    script=name, args=" ".join(args), outcome=result.describe(),
                    output=(result.stdout + result.stderr)[-500:].decode("utf-8", "replace"),
                )
            return result.exitCode if result.exitCode is not None else -1

        def failed(f: Failure) -> None:
            self.log.error("cannot run {script}: {error}", script=name,
                           error=f.getErrorMessage())
            return None

        return d.addCallbacks(done, failed)

    # -- START --------------------------------------------------------------------

    def _startReceived(self, reply: wire.Reply, addr: tuple[str, int]) -> None:
        ip, port = addr
        session = self.sessions.get(ip)
        if session is not None:
            waiting = session.waiting
            if (session.port == port and session.state == "info" and waiting is not None
                    and waiting[1] == COMM.GET_PAGE_SIZE):
                # Our ACK was lost: the client is still announcing itself.
                self.counters["start_repeat"] += 1
                self._ack(session)
                self._ask(session, COMM.GET_PAGE_SIZE, 0, waiting[4])
                return
            self.counters["start_ignored"] += 1
            return
        recent = self._rebooting.get(ip)
        if recent is not None and recent[1] > self.now():
            old = recent[0]
            if old.port == port:
                self._ack(old)
                self._sendReboot(old)
            self.counters["start_ignored"] += 1
            return
        try:
            start = wire.decodeStart(reply)
        except WireError as e:
            self.counters["malformed"] += 1
            self.log.warn("bad START from {ip}:{port}: {error}", ip=ip, port=port, error=str(e))
            return
        session = Session(ip, port, start, self.now())
        self.sessions[ip] = session
        self.counters["starts"] += 1
        if self.settings.secure:
            d = self._expectedMagic(ip)
            d.addCallback(self._checkMagic, session)
            self._track(d, session)
        else:
            self._admit(session)

    def _expectedMagic(self, ip: str) -> defer.Deferred[int | str | None]:
        """
        The magic expected from C{ip}: its magic file, else its host in the
        directory; L{None} when neither knows it, or the text of why the
        directory could not answer.
        """
        magic = self.store.magicFor(ip)
        if magic is not None or self.directory is None:
            return defer.succeed(magic)
        d = self.directory.lookupAddress(ip)
        d.addCallback(lambda record: None if record is None else record.magic)

        def failed(f: Failure) -> str:
            self.counters["directory_errors"] += 1
            return f"the host directory cannot answer ({f.getErrorMessage()})"

        return d.addErrback(failed)

    def _checkMagic(self, expected: int | str | None, session: Session) -> None:
        if self.sessions.get(session.ip) is not session:
            return
        given = session.start.magic
        if not isinstance(expected, int) or given is None or given != expected:
            del self.sessions[session.ip]
            self.counters["bad_magic"] += 1
            if self._warned(session.ip, self.now()):
                why = (expected if isinstance(expected, str) else
                       "no magic is known for it" if expected is None else
                       "it sent no magic" if given is None else "its magic is wrong")
                self.log.warn(
                    "ignoring netdump START from {ip}:{port} in secure mode: {why}",
                    ip=session.ip, port=session.port, why=why,
                )
            return
        self._admit(session)

    def _admit(self, session: Session) -> None:
        active = sum(1 for s in self.sessions.values() if s.dumping)
        try:
            directory = self.store.newCrashDir(session.ip, time.time())
        except OSError as e:
            self.log.error("cannot make a crash directory for {ip} in {root}: {error}",
                           ip=session.ip, root=self.store.root, error=e.strerror)
            session.reason = e.strerror
            self._finish(session, "write-error")
            return
        session.directory = directory
        self.consoleLogs.attachCrash(session.ip, directory)
        if active >= self.settings.concurrent:
            self.log.warn(
                "too many concurrent dumps ({active}): not dumping {ip}:{port}, rebooting it",
                active=active, ip=session.ip, port=session.port,
            )
            self._finish(session, "too-many-dumps")
            return
        session.state = "script"
        self._writeInfo(session)
        self.log.info(
            "{ip}:{port} crashed (machine {machine}, protocol {version}): dumping into {dir}",
            ip=session.ip, port=session.port, machine=session.start.machine,
            version=session.start.version, dir=directory,
        )
        d = self.runScript("netdump-crash", session.ip, directory)
        d.addCallback(self._crashScriptDone, session)
        self._track(d, session)

    def _crashScriptDone(self, code: int | None, session: Session) -> None:
        if self.sessions.get(session.ip) is not session:
            return
        if code not in (None, 0):
            self.log.info("netdump-crash refused the dump of {ip} (exit {code})",
                          ip=session.ip, code=code)
            self._finish(session, "refused-by-script")
            return
        assert session.directory is not None
        session.journal = Journal(session.directory, self._journalState(session, "info"))
        self._save(session)
        session.state = "info"
        session.lastHeard = self.now()
        self._ack(session)
        self._ask(session, COMM.GET_PAGE_SIZE)
        self._schedule(session)

    def _journalState(self, session: Session, state: str) -> dict[str, Any]:
        return {
            "state": state, "ip": session.ip, "port": session.port,
            "magic": session.magic, "machine": session.start.machine,
            "version": session.start.version, "task_struct": session.start.taskStruct,
            "page_offset": session.start.pageOffset, "started": session.startedAt,
        }

    def _ack(self, session: Session) -> None:
        session.acked = True
        self._request(session, COMM.START_NETDUMP_ACK, wire.SERVER_VERSION)

    def _request(self, session: Session, command: int, arg: int = 0) -> int:
        nr = session.nextNr()
        self.send(_REQUEST.pack(session.magic, nr, command, arg, 0), (session.ip, session.port))
        return nr

    def _ask(self, session: Session, command: int, arg: int = 0, tries: int = 0) -> None:
        nr = self._request(session, command, arg)
        session.waiting = (nr, command, arg, self.now(), tries)

    def _answered(self, session: Session, reply: wire.Reply, command: int) -> bool:
        """
        Whether C{reply} answers the request C{session} is waiting for.
        """
        waiting = session.waiting
        if waiting is None or waiting[1] != command or waiting[0] != reply.nr:
            self.counters["stale"] += 1
            return False
        session.waiting = None
        session.silent = 0
        return True

    # -- info ---------------------------------------------------------------------

    def reply_PAGE_SIZE(self, session: Session, reply: wire.Reply) -> None:
        if not self._answered(session, reply, COMM.GET_PAGE_SIZE):
            return
        size = reply.info
        if size < FRAGMENT or size > MAX_PAGE_SIZE or size & (size - 1):
            self._bad(session, f"page size {size} is not a power of two from 1 KiB to 256 KiB")
            return
        session.pageSize = size
        self._ask(session, COMM.GET_NR_PAGES)

    def reply_NR_PAGES(self, session: Session, reply: wire.Reply) -> None:
        if not self._answered(session, reply, COMM.GET_NR_PAGES):
            return
        if reply.info == 0:
            self._bad(session, "it has no pages")
            return
        session.nrPages = reply.info
        self._ask(session, COMM.GET_REGS)

    def reply_REGS(self, session: Session, reply: wire.Reply) -> None:
        if not self._answered(session, reply, COMM.GET_REGS):
            return
        try:
            session.registers = wire.registersFromReply(reply, session.machine)
            session.layout = layoutFor(session.machine, session.pageSize, session.nrPages)
            session.zeroPage = bytes(session.pageSize)
        except (WireError, ValueError) as e:
            self._bad(session, str(e))
            return
        session.totalRam = reply.info
        assert session.journal is not None
        self._save(
            session, state="space", page_size=session.pageSize, nr_pages=session.nrPages,
            registers=session.registers.hex(), total_ram=session.totalRam,
        )
        self._writeInfo(session)
        self._checkSpace(session)

    def reply_ERROR(self, session: Session, reply: wire.Reply) -> None:
        if session.state == "memory":
            self._memOther(session, reply.nr, REPLY.ERROR, reply.info)
            return
        self.counters["client_errors"] += 1
        self.log.info("{ip} answered ERROR (info {info}) to request {nr}",
                      ip=session.ip, info=reply.info, nr=reply.nr)

    def reply_RESERVED(self, session: Session, reply: wire.Reply) -> None:
        if session.state == "memory":
            self._memOther(session, reply.nr, REPLY.RESERVED, reply.info)
        else:
            self.counters["stale"] += 1

    def reply_HELLO(self, session: Session, reply: wire.Reply) -> None:
        self.counters["stale"] += 1

    def reply_END_NETDUMP(self, session: Session, reply: wire.Reply) -> None:
        self.counters["stale"] += 1

    def _bad(self, session: Session, why: str) -> None:
        self.log.error("cannot dump {ip}: {why}", ip=session.ip, why=why)
        session.reason = why
        self._finish(session, "bad-client")

    # -- space --------------------------------------------------------------------

    def _checkSpace(self, session: Session) -> None:
        session.state = "space"
        if not self.settings.spaceCheck:
            self._startMemory(session)
            return
        assert session.directory is not None
        need = session.nrPages * session.pageSize
        try:
            free = self.freeSpace(session.directory)
        except OSError as e:
            self.log.warn("cannot measure free space: {error}", error=e.strerror)
            free = need
        if free >= need:
            self._startMemory(session)
            return
        if session.spaceTried:
            self.log.error(
                "no space for the dump of {ip} even after netdump-nospace: {free} bytes free, "
                "{need} needed", ip=session.ip, free=free, need=need,
            )
            self._noSpace(session)
            return
        session.spaceTried = True
        self.log.warn("no space for the dump of {ip}: {free} bytes free, {need} needed",
                      ip=session.ip, free=free, need=need)
        if not os.path.lexists(self.store.script("netdump-nospace")):
            self._noSpace(session)
            return
        d = self.runScript("netdump-nospace", session.ip, session.directory)
        d.addCallback(self._nospaceDone, session)
        self._track(d, session)

    def _nospaceDone(self, code: int | None, session: Session) -> None:
        if self.sessions.get(session.ip) is not session:
            return
        if code == 0:
            self.log.info("netdump-nospace exited 0: rebooting {ip} without a dump", ip=session.ip)
            self._finish(session, "no-space")
        elif code is None:
            self._noSpace(session)
        else:
            self._checkSpace(session)

    def _noSpace(self, session: Session) -> None:
        session.outcome = "no-space"
        self._showState(session)

    # -- memory ---------------------------------------------------------------------

    def _startMemory(self, session: Session) -> None:
        assert session.journal is not None and session.layout is not None
        assert session.directory is not None
        session.state = "memory"
        session.memoryAt = self.now()
        session.lastHeard = max(session.lastHeard, session.memoryAt)
        try:
            session.journal.openPages(session.nrPages)
            session.vmcore = Vmcore(session.directory, session.layout)
            if not session.resumed:
                session.vmcore.writeHeader([(0, session.nrPages)], session.registers,
                                           session.start.taskStruct, session.start.pageOffset)
        except OSError as e:
            self._writeFailed(session, e)
            return
        self._save(session, state="memory")
        session.cursor = session.journal.nextMissing(0, session.nrPages)
        self.log.info(
            "dumping {ip}: {pages} pages of {size} bytes ({mb:.0f} MiB){resumed}",
            ip=session.ip, pages=session.nrPages, size=session.pageSize,
            mb=session.nrPages * session.pageSize / 2**20,
            resumed=f", resuming with {session.journal.done} done" if session.resumed else "",
        )
        self._fill(session)
        self._maybeDone(session)

    def _fill(self, session: Session) -> None:
        """
        Keep C{window} page requests in flight.
        """
        outstanding = session.outstanding
        window = self.settings.window
        # Refill in bursts: each request sent to an idle client wakes it,
        # and a burst wakes it once (this halves the cost of sending to
        # several clients at once).
        if window - len(outstanding) < max(1, window // 8) or session.writing >= MAX_WRITING:
            return
        journal = session.journal
        assert journal is not None
        limit = session.nrPages
        now = self.now()
        send = self.send
        addr = (session.ip, session.port)
        magic = session.magic
        while len(outstanding) < window and session.cursor < limit:
            pfn = session.cursor
            if journal.isDone(pfn):
                pfn = journal.nextMissing(pfn, limit)
                if pfn >= limit:
                    session.cursor = limit
                    break
            session.cursor = pfn + 1
            nr = session.nextNr()
            outstanding[nr] = _Page(pfn, now)
            send(_REQUEST.pack(magic, nr, COMM.SEND_MEM, pfn, 0), addr)

    def _rerequest(self, session: Session, nr: int, page: _Page) -> None:
        del session.outstanding[nr]
        new = session.nextNr()
        page.sent = self.now()
        session.outstanding[new] = page
        session.rerequests += 1
        self.send(_REQUEST.pack(session.magic, new, COMM.SEND_MEM, page.pfn, 0),
                  (session.ip, session.port))

    def _lostBefore(self, session: Session, nr: int) -> None:
        """
        A reply to request C{nr} arrived: the client answers in order, so
        older requests still incomplete lost fragments.  Ask again now.
        """
        outstanding = session.outstanding
        lost = []
        for older, page in outstanding.items():
            if older == nr:
                break
            lost.append((older, page))
        for older, page in lost:
            self._rerequest(session, older, page)

    def _memReply(self, session: Session, nr: int, offset: int, data: bytes) -> None:
        page = session.outstanding.get(nr)
        if page is None:
            self.counters["stale"] += 1
            return
        size = session.pageSize
        if len(data) != wire.HEADER_SIZE + FRAGMENT or offset % FRAGMENT or offset >= size:
            self.counters["malformed"] += 1
            return
        bit = 1 << (offset >> 10)
        if page.got & bit:
            self.counters["duplicate"] += 1
            return
        if page.got == 0:
            if next(iter(session.outstanding)) != nr:
                self._lostBefore(session, nr)
            page.buf = bytearray(size)
        buf = page.buf
        assert buf is not None
        buf[offset : offset + FRAGMENT] = memoryview(data)[wire.HEADER_SIZE :]
        page.got |= bit
        if page.got != (1 << (size >> 10)) - 1:
            return
        del session.outstanding[nr]
        pfn = page.pfn
        if buf == session.zeroPage:
            # Never written: the file stays sparse there.
            session.zeroPages += 1
            session.journal.markDone(pfn)  # type: ignore[union-attr]
            self.pagesReceived += 1
            self.bytesReceived += size
        else:
            batch = session.batch
            if batch and pfn != session.batchStart + len(batch):
                if not self._flush(session):
                    return
                batch = session.batch
            if not batch:
                session.batchStart = pfn
            batch.append(buf)
            if len(batch) >= BATCH_PAGES and not self._flush(session):
                return
        self._fill(session)
        if session.journal.done * 100 >= session.nextProgress * session.nrPages:  # type: ignore[union-attr]
            self._progress(session)
        if not session.outstanding:
            self._maybeDone(session)

    def _flush(self, session: Session) -> bool:
        """
        Hand the batch of completed pages to the writer (one system call);
        they are marked done in the journal when written (data first, so a
        crash never marks a page that is not on disk).

        @return: L{False} if the dump has failed.
        """
        batch = session.batch
        if not batch:
            return True
        if session.vmcore is None or session.state != "memory":
            session.batch = []
            return False
        first = session.batchStart
        session.batch = []
        session.writing += 1
        self.writer.submit(session.vmcore, first, batch,
                           lambda error: self._written(session, first, len(batch), error))
        return session.state == "memory"

    def _written(self, session: Session, first: int, count: int, error: OSError | None) -> None:
        session.writing -= 1
        if session.closeWhenWritten and not session.writing:
            self._closeVmcore(session)
        if session.state != "memory" or self.sessions.get(session.ip) is not session:
            return
        if error is not None:
            self._writeFailed(session, error)
            return
        session.written += count
        session.journal.markRange(first, first + count)  # type: ignore[union-attr]
        self.pagesReceived += count
        self.bytesReceived += count * session.pageSize
        if session.writing < MAX_WRITING:
            self._fill(session)
        self._maybeDone(session)

    def _closeVmcore(self, session: Session) -> None:
        """
        Close the vmcore once no write of it is queued (its descriptor must
        not be reused under the writer).
        """
        if session.vmcore is None:
            return
        if session.writing:
            session.closeWhenWritten = True
            return
        session.closeWhenWritten = False
        session.vmcore.close()

    def _memOther(self, session: Session, nr: int, code: int, info: int) -> None:
        """
        RESERVED (info = next RAM pfn, 0 for none) or ERROR for a page.
        """
        page = session.outstanding.get(nr)
        if page is None:
            self.counters["stale"] += 1
            return
        if next(iter(session.outstanding)) != nr:
            self._lostBefore(session, nr)
        del session.outstanding[nr]
        journal = session.journal
        assert journal is not None
        if code == REPLY.RESERVED:
            end = info if page.pfn < info <= session.nrPages else session.nrPages
        else:
            end = page.pfn + 1
            self.counters["client_errors"] += 1
        journal.markRange(page.pfn, end)
        journal.addReserved(page.pfn, end)
        if end > session.cursor:
            session.cursor = end
        # Requests already sent for pages in the hole get RESERVED too.
        for other, p in list(session.outstanding.items()):
            if page.pfn <= p.pfn < end:
                del session.outstanding[other]
        self._fill(session)
        if session.journal.done * 100 >= session.nextProgress * session.nrPages:  # type: ignore[union-attr]
            self._progress(session)
        self._maybeDone(session)

    def _progress(self, session: Session) -> None:
        journal = session.journal
        assert journal is not None
        percent = journal.done * 100 // session.nrPages
        if percent < session.nextProgress:
            return
        elapsed = max(self.now() - session.memoryAt, 1e-6)
        rate = session.written / elapsed
        self.log.info(
            "{ip}: {percent}% of pages received ({rate:.0f} pages/s, {mbps:.1f} MB/s)",
            ip=session.ip, percent=percent, rate=rate,
            mbps=rate * session.pageSize / 1e6,
        )
        session.nextProgress = (percent // 10 + 1) * 10

    def _maybeDone(self, session: Session) -> None:
        if session.state != "memory" or session.outstanding or session.cursor < session.nrPages:
            return
        if not self._flush(session) or session.writing:
            return
        journal = session.journal
        assert journal is not None and session.vmcore is not None
        if journal.done < session.nrPages:
            session.cursor = journal.nextMissing(0, session.nrPages)
            if session.cursor < session.nrPages:
                self._fill(session)
                return
        session.state = "syncing"
        ram = _complement(journal.reserved, session.nrPages)
        vmcore = session.vmcore
        try:
            vmcore.writeHeader(ram, session.registers, session.start.taskStruct,
                               session.start.pageOffset)
        except OSError as e:
            self._writeFailed(session, e)
            return
        d = self.deferToThread(vmcore.sync)

        def synced(_: Any) -> None:
            if self.sessions.get(session.ip) is not session:
                return
            vmcore.complete()
            session.outcome = "complete"
            self._save(session, state="showstate", outcome="complete")
            elapsed = max(self.now() - session.memoryAt, 1e-6)
            self.log.info(
                "{ip}: vmcore complete in {dir}: {ram} RAM pages ({zero} zero), "
                "{rate:.0f} pages/s, {mbps:.1f} MB/s, {again} pages asked again",
                ip=session.ip, dir=session.directory, ram=session.written + session.zeroPages,
                zero=session.zeroPages, rate=(session.written + session.zeroPages) / elapsed,
                mbps=(session.written + session.zeroPages) * session.pageSize / elapsed / 1e6,
                again=session.rerequests,
            )
            self._showState(session)

        def failed(f: Failure) -> None:
            self._writeFailed(session, f.value)

        self._track(d.addCallbacks(synced, failed), session)

    def _writeFailed(self, session: Session, error: Any) -> None:
        why = getattr(error, "strerror", None) or str(error)
        self.log.error("writing the dump of {ip} failed: {error}; giving it up",
                       ip=session.ip, error=why)
        session.reason = why
        session.outcome = "no-space" if getattr(error, "errno", None) == 28 else "write-error"
        session.outstanding.clear()
        session.batch = []
        self._closeVmcore(session)
        self._showState(session)

    # -- show state -------------------------------------------------------------

    def _showState(self, session: Session) -> None:
        session.state = "showstate"
        session.outstanding.clear()
        session.silent = 0
        session.lastHeard = max(session.lastHeard, self.now())
        self._ask(session, COMM.SHOW_STATE)
        self._schedule(session)

    def reply_SHOW_STATE(self, session: Session, reply: wire.Reply) -> None:
        if session.state != "showstate":
            self.counters["stale"] += 1
            return
        if session.waiting is not None and session.waiting[0] == reply.nr:
            session.waiting = None
            session.showStateReplied = True
            session.lastLog = max(session.lastLog, self.now())
        else:
            self.counters["stale"] += 1

    # -- timers -----------------------------------------------------------------

    def _schedule(self, session: Session) -> None:
        if session.timer is None or not session.timer.active():
            session.timer = self.reactor.callLater(self.settings.timeout / 4, self._tick, session)

    def _cancelTimer(self, session: Session) -> None:
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None

    def _tick(self, session: Session) -> None:
        session.timer = None
        if self.sessions.get(session.ip) is not session:
            return
        now = self.now()
        timeout = self.settings.timeout
        if session.heard != session.heardSeen:
            session.heardSeen = session.heard
            session.lastHeard = max(session.lastHeard, now)
        if session.batch and not self._flush(session):
            return
        # Once SHOW_STATE is answered the client owes nothing more: the wait
        # for its console to go quiet is not silence, however short the
        # timeout times the retries is.
        waitingForClient = session.state in ("info", "memory") or (
            session.state == "showstate" and not session.showStateReplied)
        if waitingForClient and now - session.lastHeard >= timeout * self.settings.retries and not (
            session.state == "showstate" and now - session.lastLog < timeout
        ):
            self._gone(session)
            return
        if session.state == "memory":
            for nr, page in list(session.outstanding.items()):
                if now - page.sent < timeout:
                    break
                self._rerequest(session, nr, page)
        elif session.state == "showstate":
            if session.showStateReplied:
                if now - session.lastLog >= self.settings.quiet:
                    self._finish(session, session.outcome)
                    return
            elif session.waiting is not None and now - session.waiting[3] >= timeout:
                if now - session.lastLog < timeout:
                    # Still printing its state: wait (bz 226701).
                    session.waiting = session.waiting[:3] + (now, session.waiting[4])
                elif session.waiting[4] >= self.settings.retries:
                    self._finish(session, session.outcome)
                    return
                else:
                    self._ask(session, COMM.SHOW_STATE, 0, session.waiting[4] + 1)
        elif session.waiting is not None and now - session.waiting[3] >= timeout:
            nr, command, arg, sent, tries = session.waiting
            session.silent += 1
            self._ask(session, command, arg, tries + 1)
        if session.state not in ("finished", "rebooting"):
            self._schedule(session)

    def _gone(self, session: Session) -> None:
        self.log.warn(
            "{ip}:{port} went silent for {seconds:.0f}s in state {state}: dump left incomplete",
            ip=session.ip, port=session.port,
            seconds=self.now() - session.lastHeard, state=session.state,
        )
        self.counters["gone"] += 1
        if session.outcome == "complete":
            self._finish(session, "complete", reboot=False)
        else:
            self._finish(session, "incomplete", reboot=False)

    # -- the end ----------------------------------------------------------------

    def _finish(self, session: Session, outcome: str, reboot: bool = True) -> None:
        """
        Record the outcome, release the session's memory and files, run
        netdump-reboot and reboot the client.
        """
        if session.state != "finished":
            self.finished[outcome] += 1
        session.outcome = outcome
        session.state = "finished"
        session.endedAt = self.now()
        session.outstanding.clear()
        session.waiting = None
        self._cancelTimer(session)
        self._closeVmcore(session)
        if self.sessions.get(session.ip) is session:
            del self.sessions[session.ip]
        self.consoleLogs.detachCrash(session.ip)
        if session.directory is not None:
            self._writeInfo(session)
        if session.journal is not None:
            session.journal.remove()
        self.log.info("{ip}: dump finished: {outcome}", ip=session.ip, outcome=outcome)
        if not reboot:
            return
        if session.directory is not None:
            d = self.runScript("netdump-reboot", session.ip, session.directory)
        else:
            d = defer.succeed(None)
        d.addCallback(lambda _: self._reboot(session))
        self._track(d)

    def _reboot(self, session: Session) -> None:
        if not self.running:
            return
        session.state = "rebooting"
        self._rebooting[session.ip] = (
            session,
            self.now() + self.settings.rebootCount * self.settings.rebootInterval + 10,
        )
        if not session.acked:
            # The client discards everything but an ACK until it has one.
            self._ack(session)
        self._sendReboot(session, self.settings.rebootCount)

    def _sendReboot(self, session: Session, left: int = 1) -> None:
        self._cancelTimer(session)
        if not self.running or left <= 0:
            return
        self._request(session, COMM.REBOOT)
        if left > 1:
            session.timer = self.reactor.callLater(
                self.settings.rebootInterval, self._sendReboot, session, left - 1
            )
        else:
            session.timer = self.reactor.callLater(10, self._forget, session)

    def _forget(self, session: Session) -> None:
        entry = self._rebooting.get(session.ip)
        if entry is not None and entry[0] is session:
            del self._rebooting[session.ip]

    def _writeInfo(self, session: Session) -> None:
        assert session.directory is not None
        reserved = session.journal.reserved if session.journal is not None else []
        info = {
            "client": {"ip": session.ip, "port": session.port},
            "machine": session.start.machine,
            "protocol_version": min(session.start.version, wire.SERVER_VERSION),
            "page_size": session.pageSize,
            "nr_pages": session.nrPages,
            "total_ram_pages": session.totalRam,
            "ram_pages_received": session.written + session.zeroPages,
            "zero_pages": session.zeroPages,
            "reserved_ranges": [list(r) for r in mergeRanges(reserved)],
            "pages_requested_again": session.rerequests,
            "start_time": session.startedAt,
            "end_time": session.endedAt,
            "outcome": "in-progress" if session.state not in ("finished",) else session.outcome,
            "reason": session.reason,
            "vmcore": Vmcore.COMPLETE if session.outcome == "complete" else (
                Vmcore.INCOMPLETE if session.vmcore is not None else None),
        }
        try:
            writeJSON(os.path.join(session.directory, "dump.json"), info)
        except OSError as e:
            self.log.error("cannot write dump.json of {ip}: {error}", ip=session.ip,
                           error=e.strerror)

    # -- resume -------------------------------------------------------------------

    def _resume(self, path: str) -> None:
        try:
            journal = Journal.load(path)
            state = journal.state
            start = StartInfo(int(state["machine"]), int(state["version"]),
                              int(state["task_struct"]), int(state["page_offset"]),
                              int(state["magic"]) or None)
            ip, port = str(state["ip"]), int(state["port"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            self.log.error("cannot resume the dump in {path}: {error}", path=path, error=str(e))
            return
        if ip in self.sessions:
            journal.close()
            return
        session = Session(ip, port, start, float(state.get("started", self.now())))
        session.lastHeard = self.now()
        session.magic = int(state["magic"])
        session.directory = path
        session.journal = journal
        session.resumed = True
        session.acked = True
        # Requests of the previous run may still be answered: number ours
        # elsewhere so that their replies are stale, not mistaken for new.
        session.nr = 1 + int.from_bytes(os.urandom(3), "big") * 256
        self.sessions[ip] = session
        self.consoleLogs.attachCrash(ip, path, copyBoot=False)
        phase = state.get("state")
        self.log.info("resuming the dump of {ip}:{port} in {dir} ({phase})", ip=ip, port=port,
                      dir=path, phase=phase)
        if phase in ("space", "memory") and state.get("nr_pages"):
            session.pageSize = int(state["page_size"])
            session.nrPages = int(state["nr_pages"])
            session.registers = bytes.fromhex(state.get("registers", ""))
            session.totalRam = int(state.get("total_ram", 0))
            session.layout = layoutFor(session.machine, session.pageSize, session.nrPages)
            session.zeroPage = bytes(session.pageSize)
            session.written = journal.done
            self._startMemory(session)
            self._schedule(session)
        elif phase == "showstate":
            session.outcome = state.get("outcome", "complete")
            session.pageSize = int(state.get("page_size", 0))
            session.nrPages = int(state.get("nr_pages", 0))
            self._showState(session)
        else:
            session.state = "info"
            self._ask(session, COMM.GET_PAGE_SIZE)
            self._schedule(session)


def _complement(reserved: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """
    The RAM ranges of C{[0, limit)} that are not reserved.
    """
    ram = []
    at = 0
    for start, end in mergeRanges(reserved):
        if start > at:
            ram.append((at, min(start, limit)))
        at = max(at, end)
    if at < limit:
        ram.append((at, limit))
    return [r for r in ram if r[1] > r[0]]
