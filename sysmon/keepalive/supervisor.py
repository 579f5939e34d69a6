"""
keepalive's supervisor: starts the registered processes, notices when one
dies, and restarts it by its policy (L{sysmon.keepalive.policy}).

How a death is noticed:

  - B{Children} (processes this keepalive started) are started with
    C{posix_spawn} in a session of their own, their output appended to
    C{<log-dir>/<basename>.<pid>}, and watched through a pidfd
    (C{os.pidfd_open}) registered with the reactor: one event for exactly
    that process, then C{waitid(P_PIDFD)} for its status.  Nothing scans
    the other processes, so the respawn time does not grow with their
    number.  Without pidfds they are reaped through Twisted's SIGCHLD
    handling instead.
  - B{Non-children} (registered by pid, adopted from the table after a
    keepalive restart, daemons that forked away) are watched through a
    pidfd too (readable when the process ends), or, where there are no
    pidfds, polled every C{interval} seconds.  A pid is only trusted with
    its start time from C{/proc/<pid>/stat}, so a reused pid is never taken
    for the process that had it.

Every change of a process's state is written to the table
(L{sysmon.keepalive.table}) by a writer thread after the fact: the restart
itself never waits for the disk.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import re
import shlex
import signal
from typing import Any, Callable, Iterable, Sequence

from twisted.application import service
from twisted.internet import defer, process as twistedProcess, task
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sysmon import processes
from sysmon.ratelimit import Once
from sysmon.children import ChildError, ChildResult, ChildRunner, UnsafeScript, checkScript
from sysmon.keepalive import config as processConfig
from sysmon.keepalive.config import GroupConfig, ProcessConfig
from sysmon.keepalive.errors import (
    AlreadyRegistered,
    BadConfig,
    BadRequest,
    KeepaliveError,
    NoSuchProcess,
    NotRegistered,
    Refused,
)
from sysmon.keepalive.policy import State
from sysmon.keepalive.table import Record, Table, TableWriter

__all__ = ["Spawner", "Supervisor", "TableInUse", "closeOnExec", "describeStatus", "pidfdSupported"]

#: How long a restart script may run before its process group is killed.
SCRIPT_TIMEOUT = 60.0

#: How long keepalive looks for the process a daemonizing program or a
#: restart script left running, and how often.
FIND_TIMEOUT = 10.0
FIND_EVERY = 0.1

#: A log file keepalive wrote: C{<basename>.<pid>}.
_LOG_NAME = re.compile(r"^(?P<base>.+)\.(?P<pid>[0-9]+)$")


def _signalName(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describeStatus(code: int, status: int) -> str:
    """
    One phrase for how a process ended, from C{waitid}'s C{si_code} and
    C{si_status}.
    """
    if code == os.CLD_EXITED:
        return f"exited with status {status}"
    if code == os.CLD_DUMPED:
        return f"was killed by {_signalName(status)} (core dumped)"
    return f"was killed by {_signalName(status)}"


def _describeWaitStatus(status: int) -> str:
    if os.WIFEXITED(status):
        return describeStatus(os.CLD_EXITED, os.WEXITSTATUS(status))
    return describeStatus(os.CLD_KILLED, os.WTERMSIG(status))


def pidfdSupported() -> bool:
    """
    Can this kernel (and Python) watch processes through pidfds?
    """
    if not hasattr(os, "pidfd_open") or not hasattr(os, "P_PIDFD"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


class Spawner:
    """
    Starts one program the way keepalive runs its processes: a session of
    its own, stdin from C{/dev/null}, stdout and stderr appended to
    C{<logDir>/<basename>.<pid>}, keepalive's environment plus the config's
    C{env.} keys, and the config's user, group and working directory.

    C{posix_spawn} (a vfork and an exec: no copy of keepalive's memory)
    does the start.  It cannot change user or directory, so those go
    through util-linux's C{setpriv} and coreutils' C{env -C}, which then
    exec the program.

    @ivar logDir: where the output files go.
    """

    def __init__(self, logDir: str, environ: dict[str, str] | None = None) -> None:
        self.logDir = logDir
        self.environ = dict(os.environ if environ is None else environ)

    def _argv(self, config: ProcessConfig, uid: int | None, gid: int | None) -> list[str]:
        argv = list(config.argv)
        if config.cwd is not None:
            argv = ["/usr/bin/env", "-C", config.cwd, "--"] + argv
        if uid is not None or gid is not None:
            wrapper = ["/usr/bin/setpriv"]
            if uid is not None:
                wrapper.append(f"--reuid={uid}")
            if gid is not None:
                wrapper.append(f"--regid={gid}")
            if uid is not None and config.user is not None and not config.user.isdigit():
                wrapper.append("--init-groups")
            else:
                wrapper.append("--clear-groups")
            argv = wrapper + ["--"] + argv
        return argv

    def spawn(
        self, config: ProcessConfig, uid: int | None = None, gid: int | None = None
    ) -> tuple[int, str]:
        """
        Start C{config}'s program.

        @return: its pid and the path of its log file.
        @raise ChildError: it could not be started (the log file cannot be
            created, the program cannot be executed).
        """
        argv = self._argv(config, uid, gid)
        environ = self.environ
        if config.env:
            environ = dict(environ)
            environ.update(config.env)
        starting = os.path.join(self.logDir, f".{config.basename}.starting")
        try:
            out = os.open(
                starting,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                0o640,
            )
        except OSError as e:
            raise ChildError(f"cannot create the log file {starting}: {e.strerror}",
                             e.errno) from None
        try:
            devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                pid = os.posix_spawn(
                    argv[0],
                    argv,
                    environ,
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, devnull, 0),
                        (os.POSIX_SPAWN_DUP2, out, 1),
                        (os.POSIX_SPAWN_DUP2, out, 2),
                    ],
                    setsid=True,
                    setsigmask=(),
                    setsigdef=_ignoredSignals(),
                )
            finally:
                os.close(devnull)
        except OSError as e:
            os.close(out)
            os.unlink(starting)
            raise ChildError(f"cannot start {argv[0]}: {e.strerror}", e.errno) from None
        os.close(out)
        logPath = os.path.join(self.logDir, f"{config.basename}.{pid}")
        os.rename(starting, logPath)
        return pid, logPath


def closeOnExec() -> list[int]:
    """
    Mark every inheritable descriptor above 2 close-on-exec, so that no
    child inherits it.  Python opens everything close-on-exec, but a
    descriptor inherited from whoever started keepalive is not, and
    C{posix_spawn} (unlike Twisted's own spawning) closes nothing; this runs
    when keepalive starts and at each registration, never on the restart
    path.

    @return: the descriptors changed.
    """
    changed = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
                changed.append(fd)
        except OSError:
            pass
    return changed


def _settle(collect: bool = False) -> None:
    """
    Move everything alive now (the reactor, the entries just registered)
    out of the garbage collector's sight.  Left in, they make each full
    collection walk every object keepalive holds, tens of milliseconds
    with hundreds of processes, and one such pause landing on a death would
    delay that restart by as much.  Called after start-up and after each
    registration, never on the restart path.  C{gc.freeze} itself costs
    nothing; C{collect} (at start-up only) first drops the garbage there is.
    """
    if collect:
        gc.collect()
    gc.freeze()


def _ignoredSignals() -> list[int]:
    # Python ignores SIGPIPE (and twistd may ignore others); a child must
    # start with the default dispositions.
    ignored = []
    for number in signal.valid_signals():
        try:
            if signal.getsignal(number) is signal.SIG_IGN:
                ignored.append(number)
        except (ValueError, OSError):
            pass
    return ignored


class TableInUse(KeepaliveError):
    """
    Another keepalive holds the table.
    """


@implementer(IReadDescriptor)
class _PidfdWatch:
    """
    A pidfd in the reactor: readable once the process has ended.
    """

    def __init__(self, fd: int, ended: Callable[[], None]) -> None:
        self.fd = fd
        self.ended = ended

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.ended()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "keepalive-pidfd"


class _Reaper:
    """
    A child watched through Twisted's SIGCHLD handling (no pidfds): Twisted
    calls L{reapProcess} on every SIGCHLD.
    """

    def __init__(self, pid: int, ended: Callable[[str, int | None], None]) -> None:
        self.pid = pid
        self.ended = ended
        self.done = False

    def reapProcess(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1
        if pid:
            twistedProcess.unregisterReapProcessHandler(self.pid, self)
            self.processEnded(status)

    def processEnded(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        if status < 0:
            self.ended("ended", None)
        else:
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            self.ended(_describeWaitStatus(status), code)


class _Entry:
    """
    A table record and what keepalive holds for it while it runs.
    """

    def __init__(self, record: Record) -> None:
        self.record = record
        self.watch: _PidfdWatch | None = None
        self.reaper: _Reaper | None = None
        self.polled = False
        self.timer: Any = None
        self.killTimer: Any = None
        self.stopping: defer.Deferred[None] | None = None
        self.busy: defer.Deferred[Any] | None = None
        self.removed = False

    @property
    def name(self) -> str:
        return self.record.config.path

    def describe(self) -> str:
        return f"slot {self.record.slot} {self.record.config.path}"


class Supervisor(service.Service):
    """
    The monitored processes and their lifecycle; the object the control
    channel (L{sysmon.keepalive.control}) calls.

    @ivar interval: seconds between polls of processes that cannot be
        watched through a pidfd.
    @ivar usePidfd: watch through pidfds (the default where supported).
    @ivar restarts: restarts begun by this supervisor, of every process
        (for metrics; each record's own count is in the table).
    """

    log = Logger()

    def __init__(
        self,
        tablePath: str,
        *,
        logDir: str,
        scriptDir: str,
        controlPath: str = "",
        interval: float = 5.0,
        clean: bool = False,
        usePidfd: bool | None = None,
        reactor: Any = None,
        proc: str = processes.PROC,
        runner: ChildRunner | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.tablePath = tablePath
        self.logDir = logDir
        self.scriptDir = scriptDir
        self.controlPath = controlPath
        self.interval = interval
        self.clean = clean
        self.usePidfd = pidfdSupported() if usePidfd is None else usePidfd
        self.proc = proc
        self.runner = runner if runner is not None else ChildRunner(reactor)
        self.spawner = Spawner(logDir, environ)
        self.entries: dict[int, _Entry] = {}
        self.table: Table | None = None
        self._records: list[Record] = []
        self._lock: int | None = None
        self.writer: TableWriter | None = None
        self.started = 0.0
        self.restarts = 0
        self._nextSlot = 1
        self._poller: task.LoopingCall | None = None
        self._quitting = False
        self._orphans: list[Any] = []
        self._calls: set[Any] = set()
        self._noDescriptors = Once(interval=3600)

    def _later(self, delay: float, f: Callable[..., Any], *args: Any) -> Any:
        """
        C{reactor.callLater}, remembered so that stopping cancels it.
        """
        def run() -> None:
            self._calls.discard(call)
            f(*args)

        call = self.reactor.callLater(delay, run)
        self._calls.add(call)
        return call

    # -- service lifecycle ------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Open the table and the log directory (before twistd drops
        privileges).  A table that cannot be used ends keepalive with the
        reason (exit status 1).
        """
        super().privilegedStartService()
        self._openTable()

    def _openTable(self) -> None:
        if self.table is not None:
            return
        try:
            os.makedirs(self.logDir, 0o755, exist_ok=True)
        except OSError as e:
            self.log.critical("cannot create the log directory {path}: {why}",
                              path=self.logDir, why=e.strerror)
            raise SystemExit(1)
        try:
            table = Table(self.tablePath)
            self._lockTable(table)
            # The table is read and (with -i) cleared here, before its
            # writer thread exists: from then on only that thread uses it.
            if self.clean:
                table.clear()
                self._records = []
            else:
                self._records = table.load()
            self._nextSlot = table.nextSlot()
            self.started = self.reactor.seconds()
            table.setMeta(
                pid=os.getpid(),
                started=self.started,
                table=self.tablePath,
                control=self.controlPath,
            )
        except KeepaliveError as e:
            self.log.critical("{error}", error=str(e))
            raise SystemExit(1)
        self.table = table

    def _lockTable(self, table: Table) -> None:
        """
        Hold an exclusive C{flock} on the table file for as long as keepalive
        runs, so that two keepalives never manage the same processes
        (readers such as C{spawndaemon -L} are not affected).
        """
        fd = os.open(self.tablePath, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = table.meta().get("pid", "?")
            table.close()
            raise TableInUse(
                f"another keepalive (pid {owner}) is using the table {self.tablePath}"
            ) from None
        self._lock = fd

    def startService(self) -> None:
        """
        Start (C{clean}) or take over the processes of the table.
        """
        super().startService()
        closeOnExec()
        self._openTable()
        assert self.table is not None
        if self.clean:
            self._deleteLogs(keep=set())
            self.log.info("keepalive starting with a clean table {table}", table=self.tablePath)
        records, self._records = self._records, []
        self.writer = TableWriter(self.table, self.reactor)
        self.log.info(
            "keepalive supervising; table {table}, logs in {logDir}, "
            "{how}",
            table=self.tablePath,
            logDir=self.logDir,
            how="pidfds" if self.usePidfd else f"polling every {self.interval:g}s",
        )
        for record in records:
            self._takeOver(record)
        _settle(collect=True)

    def stopService(self) -> defer.Deferred[None]:
        """
        Stop watching, leave the processes running (the next keepalive takes
        them over from the table), and wait for the table to be written.
        """
        super().stopService()
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        for entry in list(self.entries.values()):
            self._cancelTimers(entry)
            self._unwatch(entry, reapLater=False)
            if entry.busy is not None:
                entry.busy.cancel()
        if not self._quitting:
            for entry in self.entries.values():
                self._save(entry)
            self._deleteLogs(keep={e.record.logPath for e in self.entries.values()})
        writer = self.writer
        self.writer = None
        self.table = None
        lock, self._lock = self._lock, None
        d = self.runner.stopAll()
        d.addBoth(lambda _: writer.close() if writer is not None else None)
        # The lock goes once the last write is on disk.
        d.addBoth(lambda _: os.close(lock) if lock is not None else None)
        d.addBoth(lambda _: None)
        return d

    def info(self) -> dict[str, Any]:
        """
        What C{spawndaemon -q} and C{-L} show about keepalive itself.
        """
        return {
            "pid": os.getpid(),
            "started": self.started,
            "table": self.tablePath,
            "control": self.controlPath,
            "processes": len(self.entries),
        }

    def terminate(self) -> None:
        """
        Stop keepalive (after C{spawndaemon -Q} has been answered).
        """
        self.reactor.stop()

    # -- requests from spawndaemon ----------------------------------------

    def _load(self, configPath: str, errorLimit: int | None) -> ProcessConfig | GroupConfig:
        if errorLimit is not None and errorLimit < 1:
            raise BadRequest(f"error limit must be 1 or more, not {errorLimit}")
        config = processConfig.load(configPath, scriptDir=self.scriptDir, errorLimit=errorLimit)
        members = config.members if isinstance(config, GroupConfig) else (config,)
        for member in members:
            member.resolveIds()
            if member.restartScript is not None:
                try:
                    checkScript(member.restartScript)
                except UnsafeScript as e:
                    raise Refused(f"{member.source}: restart script {e}") from None
        return config

    def _find(self, path: str, args: Sequence[str]) -> _Entry | None:
        for entry in self.entries.values():
            config = entry.record.config
            if config.path == path and config.args == tuple(args):
                return entry
        return None

    def register(
        self,
        configPath: str,
        *,
        errorLimit: int | None = None,
        matchArgs: bool = False,
        downCode: int | None = None,
        rejectCode: int | None = None,
    ) -> defer.Deferred[list[int]]:
        """
        Register the process (or group) of a config file and start it.  A
        registered process that is C{down} is brought back (its failures
        are forgotten) with the config as it is now.

        @return: the slots, in the order of the file.
        """
        try:
            config = self._load(configPath, errorLimit)
        except KeepaliveError as e:
            return defer.fail(e)
        closeOnExec()
        if isinstance(config, GroupConfig):
            members = list(zip(config.members, config.critical))
            group: str | None = config.name
        else:
            members = [(config, False)]
            group = None
        existing = [self._find(m.path, m.args) for m, _ in members]
        if group is not None:
            existing += [e for e in self.entries.values() if e.record.group == group]
        for entry in existing:
            if entry is not None and entry.record.state is not State.DOWN:
                r = entry.record
                return defer.fail(AlreadyRegistered(
                    f"{r.config.path} is already registered (slot {r.slot}, state "
                    f"{r.state.value}, pid {r.pid or '-'}); a process is registered again "
                    "only when it is down"
                ))
        now = self.reactor.seconds()
        started: list[_Entry] = []
        for (member, critical), old in zip(members, existing):
            if old is not None:
                entry = old
                record = entry.record
                record.config = member
                record.failures = ()
                record.state = State.START
                self.log.info("{name}: registered again, brought back from down",
                              name=entry.describe())
            else:
                record = Record(slot=self._nextSlot, config=member, registered=now)
                self._nextSlot += 1
                entry = _Entry(record)
                self.entries[record.slot] = entry
            record.group = group
            record.critical = critical
            record.matchArgs = matchArgs
            record.downCode = downCode
            record.rejectCode = rejectCode
            record.daemonizes = member.pidfile is not None or matchArgs
            started.append(entry)
        failed: list[str] = []
        for entry in started:
            try:
                self._start(entry)
            except ChildError as e:
                failed.append(str(e))
        if failed:
            for entry in started:
                if entry.record.pid:
                    self._stop(entry)
                self._forget(entry)
            return defer.fail(BadRequest("; ".join(failed)))
        for entry in started:
            self.log.info(
                "registered {name} from {source}: pid {pid}",
                name=entry.describe(), source=entry.record.config.source,
                pid=entry.record.pid,
            )
        _settle()
        return defer.succeed([e.record.slot for e in started])

    def adopt(self, configPath: str, pid: int, *, matchArgs: bool = False) -> defer.Deferred[int]:
        """
        Register a process that is already running (C{spawndaemon -R}).

        @raise NoSuchProcess: C{pid} is not running, or runs another program.
        """
        try:
            config = self._load(configPath, None)
            if isinstance(config, GroupConfig):
                raise BadRequest(f"{configPath} is a group file; -R takes a process config file")
            started = processes.startTime(pid, self.proc)
            cmdline = processes.commandLine(pid, self.proc)
            if started is None or cmdline is None:
                raise NoSuchProcess(f"no process {pid} is running")
            if not processes.matches(cmdline, config.path, config.args if matchArgs else None):
                raise NoSuchProcess(
                    f"process {pid} runs {shlex.join(cmdline)}, not "
                    f"{shlex.join(config.argv) if matchArgs else config.path}"
                )
            for entry in self.entries.values():
                if entry.record.pid == pid:
                    raise AlreadyRegistered(f"process {pid} is already registered "
                                            f"(slot {entry.record.slot})")
            old = self._find(config.path, config.args)
            if old is not None and old.record.state is not State.DOWN:
                raise AlreadyRegistered(
                    f"{config.path} is already registered (slot {old.record.slot}, "
                    f"pid {old.record.pid or '-'})"
                )
        except KeepaliveError as e:
            return defer.fail(e)
        now = self.reactor.seconds()
        if old is not None:
            entry = old
            entry.record.config = config
            entry.record.failures = ()
        else:
            entry = _Entry(Record(slot=self._nextSlot, config=config, registered=now))
            self._nextSlot += 1
            self.entries[entry.record.slot] = entry
        record = entry.record
        record.matchArgs = matchArgs
        record.daemonizes = config.pidfile is not None or matchArgs
        record.pid = pid
        record.startTime = started
        record.child = False
        record.spawned = False
        record.started = now
        record.logPath = None
        record.state = State.OK
        self._watchOther(entry)
        self._save(entry)
        self.log.info("registered running process {pid} as {name}", pid=pid,
                      name=entry.describe())
        _settle()
        return defer.succeed(record.slot)

    def _select(
        self,
        path: str | None,
        args: Sequence[str] | None,
        pid: int | None,
        group: str | None,
        slot: int | None,
        matchArgs: bool,
    ) -> list[_Entry]:
        given = [s for s in (path, pid, group, slot) if s is not None]
        if len(given) != 1:
            raise BadRequest("name exactly one of a path, a pid, a group or a slot")
        entries = list(self.entries.values())
        if slot is not None:
            chosen = [e for e in entries if e.record.slot == slot]
            what = f"slot {slot}"
        elif pid is not None:
            chosen = [e for e in entries if e.record.pid == pid]
            what = f"process {pid}"
        elif group is not None:
            chosen = [e for e in entries if e.record.group == group]
            what = f"group {group}"
        else:
            chosen = [e for e in entries if e.record.config.path == path]
            wanted = tuple(args or ())
            if matchArgs or wanted:
                chosen = [e for e in chosen if e.record.config.args == wanted]
            what = shlex.join([path] + list(wanted)) if (matchArgs or wanted) else path
            if len(chosen) > 1:
                slots = ", ".join(str(e.record.slot) for e in chosen)
                raise BadRequest(
                    f"{len(chosen)} registered processes run {path} (slots {slots}); "
                    "give its arguments with -a, or its slot with -s"
                )
        if not chosen:
            raise NotRegistered(f"{what} is not registered")
        return chosen

    def unregister(
        self,
        *,
        path: str | None = None,
        args: Sequence[str] | None = None,
        pid: int | None = None,
        group: str | None = None,
        slot: int | None = None,
        kill: bool = False,
        matchArgs: bool = False,
    ) -> defer.Deferred[list[int]]:
        """
        Forget processes; with C{kill}, also stop them (SIGTERM, then SIGKILL
        after their term wait).  A process left running is no longer
        watched; its log file stays with it.
        """
        try:
            chosen = self._select(path, args, pid, group, slot, matchArgs)
        except KeepaliveError as e:
            return defer.fail(e)
        stops = []
        for entry in chosen:
            entry.removed = True
            self._cancelTimers(entry)
            if entry.busy is not None:
                entry.busy.cancel()
            if kill and entry.record.pid:
                stops.append(self._stop(entry).addCallback(lambda _, e=entry: self._drop(e)))
            else:
                self._drop(entry)

        d = defer.gatherResults(stops)
        d.addCallback(lambda _: [e.record.slot for e in chosen])
        return d

    def _drop(self, entry: _Entry) -> None:
        record = entry.record
        running = bool(record.pid)
        self._unwatch(entry, reapLater=True)
        self._forget(entry)
        if running:
            self.log.info("unregistered {name}; pid {pid} keeps running",
                          name=entry.describe(), pid=record.pid)
        else:
            self._deleteLog(record.logPath)
            self.log.info("unregistered {name}", name=entry.describe())

    def _forget(self, entry: _Entry) -> None:
        entry.removed = True
        self.entries.pop(entry.record.slot, None)
        if self.writer is not None:
            self.writer.delete(entry.record.slot)

    def quit(self) -> defer.Deferred[list[int]]:
        """
        Stop keepalive for good (C{spawndaemon -Q}): stop the processes it
        started (term wait, then SIGKILL), leave the ones registered by pid
        running, and clear the table.  The caller then calls L{terminate}.

        @return: the slots of the processes that were stopped.
        """
        self._quitting = True
        stopped = []
        stops = []
        for entry in list(self.entries.values()):
            entry.removed = True
            self._cancelTimers(entry)
            if entry.busy is not None:
                entry.busy.cancel()
            if entry.record.pid and entry.record.spawned:
                stopped.append(entry.record.slot)
                stops.append(self._stop(entry))
        self.log.info("spawndaemon -Q: stopping {count} processes and clearing the table",
                      count=len(stops))

        def cleared(_: object) -> list[int]:
            for entry in list(self.entries.values()):
                self._unwatch(entry, reapLater=False)
                self._deleteLog(entry.record.logPath)
            self.entries.clear()
            if self.writer is not None:
                self.writer.clear()
            return stopped

        return defer.gatherResults(stops).addCallback(cleared)

    # -- starting ---------------------------------------------------------

    def _start(self, entry: _Entry) -> None:
        """
        Run the program now, as a child of keepalive.

        @raise ChildError: it could not be started.
        """
        record = entry.record
        uid, gid = record.config.resolveIds()
        oldLog = record.logPath
        pid, logPath = self.spawner.spawn(record.config, uid, gid)
        record.pid = pid
        record.child = True
        record.spawned = True
        record.started = self.reactor.seconds()
        record.logPath = logPath
        record.state = State.DAEMONIZE if record.config.pidfile else State.OK
        self._watchChild(entry)
        record.startTime = processes.startTime(pid, self.proc) or 0
        if oldLog and oldLog != logPath:
            self._deleteLog(oldLog)
        self._save(entry)

    def _restart(self, entry: _Entry) -> None:
        entry.timer = None
        if entry.removed or not self.running:
            return
        record = entry.record
        record.restarts += 1
        self.restarts += 1
        if record.config.restartScript is not None:
            self._runRestartScript(entry)
            return
        old = record.pid
        try:
            self._start(entry)
        except (ChildError, BadConfig) as e:
            self._startFailed(entry, str(e))
            return
        self.log.info("{name} restarted: pid {pid}", name=entry.describe(), pid=record.pid,
                      old=old)

    def _startFailed(self, entry: _Entry, why: str) -> None:
        record = entry.record
        record.pid = 0
        record.lastExit = f"could not be started: {why}"
        limit, record.failures = record.config.policy.countFailure(
            self.reactor.seconds(), record.failures
        )
        self.log.error("{name} could not be started: {why}", name=entry.describe(), why=why)
        if limit:
            self._down(entry, "its error limit was reached")
            return
        self._schedule(entry, max(record.config.policy.respawnTime, 1.0))

    def _schedule(self, entry: _Entry, delay: float) -> None:
        entry.record.state = State.RESPAWN
        if delay <= 0:
            # The restart saves the record; nothing may delay it.
            self._restart(entry)
        else:
            self._save(entry)
            entry.timer = self._later(delay, self._restart, entry)

    def _down(self, entry: _Entry, reason: str) -> None:
        record = entry.record
        record.state = State.DOWN
        record.pid = 0
        self._save(entry)
        self.log.error(
            "{name} is down: {reason}; it is not restarted until it is registered "
            "again (spawndaemon -r {source})",
            name=entry.describe(), reason=reason, source=record.config.source,
        )
        if record.group is not None and record.critical:
            for other in self._groupMembers(entry):
                self._cancelTimers(other)
                if other.record.pid:
                    self._stop(other).addCallback(lambda _, o=other: self._down(
                        o, f"critical member {record.config.path} of group {record.group} "
                        "is down"))
                elif other.record.state is not State.DOWN:
                    other.record.state = State.DOWN
                    self._save(other)

    # -- restart scripts --------------------------------------------------

    def _runRestartScript(self, entry: _Entry) -> None:
        record = entry.record
        script = record.config.restartScript
        assert script is not None
        try:
            checkScript(script)
        except UnsafeScript as e:
            self._down(entry, f"restart script {e}")
            return
        record.state = State.RESPAWN
        # A restart deletes the previous instance's log (the process the
        # script starts is not keepalive's child and writes its own).
        self._deleteLog(record.logPath)
        record.logPath = None
        self._save(entry)
        environ = dict(os.environ)
        environ.update(
            KEEPALIVE_SLOT=str(record.slot),
            KEEPALIVE_COMMAND=record.config.path,
            KEEPALIVE_ARGS=shlex.join(record.config.args),
            KEEPALIVE_CONFIG=record.config.source,
            KEEPALIVE_LAST_EXIT=record.lastExit,
        )
        try:
            since = processes.ticksNow(self.proc)
        except OSError:
            since = 0
        self.log.info("{name}: running its restart script {script}", name=entry.describe(),
                      script=script)
        d = self.runner.run([script], env=environ, timeout=SCRIPT_TIMEOUT)
        entry.busy = d

        def done(result: ChildResult) -> None:
            entry.busy = None
            self._scriptDone(entry, script, result, since)

        def failed(failure: Failure) -> None:
            entry.busy = None
            if failure.check(defer.CancelledError):
                return
            self._startFailed(entry, f"restart script {script}: {failure.getErrorMessage()}")

        d.addCallbacks(done, failed)

    def _scriptDone(self, entry: _Entry, script: str, result: ChildResult, since: int) -> None:
        record = entry.record
        output = (result.stdout + result.stderr).decode("utf-8", "replace").strip()
        code = result.exitCode
        if result.succeeded:
            self.log.info("{name}: restart script {script} succeeded", name=entry.describe(),
                          script=script)
            self._findRestarted(entry, since, "its restart script")
            return
        if code is not None and code == record.downCode:
            self._down(entry, f"its restart script {script} exited with {code} (-c down={code})")
            return
        if code is not None and code == record.rejectCode:
            self.log.warn(
                "{name}: restart script {script} refused the restart (exit {code}, "
                "-c reject={code}); counted as a failure",
                name=entry.describe(), script=script, code=code,
            )
            limit, record.failures = record.config.policy.countFailure(
                self.reactor.seconds(), record.failures
            )
            record.lastExit = f"restart refused by {script} (exit {code})"
            if limit:
                self._down(entry, "its error limit was reached")
            else:
                self._schedule(entry, max(record.config.policy.respawnTime, 1.0))
            return
        self.log.error(
            "{name}: restart script {script} {how}; starting the command itself. "
            "Its output: {output}",
            name=entry.describe(), script=script, how=result.describe(),
            output=output[-2000:] or "(none)",
        )
        try:
            self._start(entry)
        except (ChildError, BadConfig) as e:
            self._startFailed(entry, str(e))

    # -- finding a process that went into the background -------------------

    def _findRestarted(self, entry: _Entry, since: int, how: str) -> None:
        """
        Look for the process that a daemonizing program or a restart script
        left running (its pid file, else its name and, with C{-a}, its
        arguments), for up to L{FIND_TIMEOUT} seconds, and follow it.
        """
        record = entry.record
        record.state = State.DAEMONIZE
        self._save(entry)
        deadline = self.reactor.seconds() + FIND_TIMEOUT

        def look() -> None:
            entry.timer = None
            if entry.removed or not self.running:
                return
            found = self._lookFor(record, since)
            if found is not None:
                pid, started = found
                record.pid, record.startTime = pid, started
                record.child = False
                record.spawned = True
                record.state = State.OK
                self._watchOther(entry)
                self._save(entry)
                self.log.info("{name}: following pid {pid}, started by {how}",
                              name=entry.describe(), pid=pid, how=how)
                return
            if self.reactor.seconds() >= deadline:
                record.pid = 0
                self._died(entry, f"left no process running after {how}")
                return
            entry.timer = self._later(FIND_EVERY, look)

        look()

    def _lookFor(self, record: Record, since: int) -> tuple[int, int] | None:
        config = record.config
        if config.pidfile is not None:
            try:
                with open(config.pidfile) as f:
                    pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                return None
            # The pid file is the program's own word for which process
            # stayed; its start time shows it is not a stale file.
            started = processes.startTime(pid, self.proc)
            if started is None or started < since:
                return None
            return pid, started
        found = processes.find(config.path, config.args if record.matchArgs else None,
                               after=since, proc=self.proc)
        return found[0] if found else None

    # -- watching ---------------------------------------------------------

    def _watchChild(self, entry: _Entry) -> None:
        pid = entry.record.pid
        fd = self._pidfd(pid) if self.usePidfd else None
        if fd is not None:
            entry.watch = _PidfdWatch(fd, lambda: self._childEnded(entry))
            self.reactor.addReader(entry.watch)
        else:
            # Twisted reaps at once a child that has already ended; the
            # death must still be handled after this start, not inside it.
            reaper = _Reaper(pid, lambda how, code: self._later(
                0, self._ended, entry, how, code))
            entry.reaper = reaper
            twistedProcess.registerReapProcessHandler(pid, reaper)

    def _pidfd(self, pid: int) -> int | None:
        """
        A pidfd for C{pid}, or L{None} when this process has no descriptor
        left for one (then it is reaped on SIGCHLD or polled instead).

        @raise ProcessLookupError: there is no process C{pid}.
        """
        try:
            return os.pidfd_open(pid)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            if self._noDescriptors("pidfd", self.reactor.seconds()):
                self.log.warn(
                    "no file descriptor left for a pidfd ({why}); processes beyond the "
                    "limit are reaped on SIGCHLD or polled every {interval:g}s; raise "
                    "keepalive's RLIMIT_NOFILE (LimitNOFILE=)",
                    why=e.strerror, interval=self.interval,
                )
            return None

    def _childEnded(self, entry: _Entry) -> None:
        watch = entry.watch
        if watch is None:
            return
        try:
            result = os.waitid(os.P_PIDFD, watch.fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            self._ended(entry, "ended")
            return
        if result is None:
            return
        exitCode = result.si_status if result.si_code == os.CLD_EXITED else None
        self._ended(entry, describeStatus(result.si_code, result.si_status), exitCode)

    def _watchOther(self, entry: _Entry) -> None:
        """
        Watch a process that is not keepalive's child, whose pid and start
        time are in the record.
        """
        record = entry.record
        if self.usePidfd:
            try:
                fd = self._pidfd(record.pid)
            except ProcessLookupError:
                fd = -1
            if fd is not None:
                # The pidfd names one process for good; the start time, read
                # after it was opened, proves it is the one the record means.
                if fd >= 0 and processes.startTime(record.pid, self.proc) == record.startTime:
                    entry.watch = _PidfdWatch(fd, lambda: self._ended(entry, "ended"))
                    self.reactor.addReader(entry.watch)
                    return
                if fd >= 0:
                    os.close(fd)
                self._later(0, self._ended, entry, "ended")
                return
        entry.polled = True
        if self._poller is None or not self._poller.running:
            self._poller = task.LoopingCall(self._poll)
            self._poller.clock = self.reactor
            self._poller.start(self.interval, now=False)

    def _poll(self) -> None:
        polled = [e for e in self.entries.values() if e.polled]
        for entry in polled:
            record = entry.record
            if processes.startTime(record.pid, self.proc) != record.startTime:
                self._ended(entry, "ended")
        if not any(e.polled for e in self.entries.values()) and self._poller is not None:
            self._poller.stop()

    def _unwatch(self, entry: _Entry, *, reapLater: bool) -> None:
        """
        Stop watching C{entry}'s process.  A child left running is still
        reaped when it ends (C{reapLater}), so it never stays a zombie.
        """
        watch, entry.watch = entry.watch, None
        if watch is not None:
            self.reactor.removeReader(watch)
            if reapLater and entry.record.child:
                orphan = _PidfdWatch(watch.fd, lambda: None)
                orphan.ended = lambda: self._reapOrphan(orphan)
                self._orphans.append(orphan)
                self.reactor.addReader(orphan)
            else:
                os.close(watch.fd)
        reaper, entry.reaper = entry.reaper, None
        if reaper is not None and not reaper.done and not reapLater:
            try:
                twistedProcess.unregisterReapProcessHandler(reaper.pid, reaper)
            except RuntimeError:
                pass
        elif reaper is not None and not reaper.done:
            reaper.ended = lambda how: None
        entry.polled = False

    def _reapOrphan(self, orphan: _PidfdWatch) -> None:
        try:
            if os.waitid(os.P_PIDFD, orphan.fd, os.WEXITED | os.WNOHANG) is None:
                return
        except ChildProcessError:
            pass
        self.reactor.removeReader(orphan)
        os.close(orphan.fd)
        self._orphans.remove(orphan)

    # -- deaths -----------------------------------------------------------

    def _ended(self, entry: _Entry, how: str, exitCode: int | None = None) -> None:
        """
        C{entry}'s process has ended.

        @param how: "was killed by SIGKILL", "exited with status 3", ...
        @param exitCode: its exit status if it exited (and is known).
        """
        record = entry.record
        wasChild = record.child
        self._unwatch(entry, reapLater=False)
        oldPid = record.pid
        record.pid = 0
        record.lastExit = how if wasChild else f"{how} (not keepalive's child: status unknown)"
        if entry.stopping is not None:
            stopping, entry.stopping = entry.stopping, None
            self._cancelTimers(entry)
            stopping.callback(None)
            return
        if entry.removed or not self.running:
            return
        if wasChild and record.daemonizes and exitCode == 0:
            # It forked and its parent exited: follow the one that stayed.
            started = record.startTime
            self._findRestarted(entry, started, "daemonizing")
            return
        self._died(entry, record.lastExit, oldPid)

    def _died(self, entry: _Entry, how: str, oldPid: int = 0) -> None:
        record = entry.record
        now = self.reactor.seconds()
        record.lastDied = now
        if not record.firstDied:
            record.firstDied = now
        record.state = State.DEAD
        decision, record.failures = record.config.policy.afterDeath(
            now, record.started, record.failures
        )
        if decision.action == "down":
            self.log.warn("{name} (pid {pid}) {how}", name=entry.describe(), pid=oldPid, how=how)
            self._down(entry, decision.reason)
            return
        if record.group is not None and record.critical:
            self._restartGroup(entry, how, oldPid, decision.delay)
            return
        if decision.delay <= 0:
            # Restart first, log after: the log line must not delay it.
            self._schedule(entry, 0)
            self.log.warn(
                "{name} (pid {oldPid}) {how}; restarted at once as pid {pid}",
                name=entry.describe(), oldPid=oldPid, how=how, pid=record.pid,
            )
            return
        self.log.warn(
            "{name} (pid {oldPid}) {how}; restarting in {delay:g}s: {reason}",
            name=entry.describe(), oldPid=oldPid, how=how, delay=decision.delay,
            reason=decision.reason,
        )
        self._schedule(entry, decision.delay)

    # -- groups -----------------------------------------------------------

    def _groupMembers(self, entry: _Entry) -> list[_Entry]:
        return [
            e for e in self.entries.values()
            if e is not entry and e.record.group == entry.record.group
        ]

    def _restartGroup(self, entry: _Entry, how: str, oldPid: int, delay: float) -> None:
        """
        A critical member died: stop the others and restart them all.
        """
        group = entry.record.group
        others = self._groupMembers(entry)
        self.log.warn(
            "{name} (pid {oldPid}) {how}; it is critical to group {group}: "
            "restarting the group",
            name=entry.describe(), oldPid=oldPid, how=how, group=group,
        )
        stops = []
        for other in others:
            self._cancelTimers(other)
            if other.record.pid:
                other.record.state = State.SHUTDOWN
                self._save(other)
                stops.append(self._stop(other))
        entry.record.state = State.RESPAWN
        self._save(entry)

        def restartAll(_: object) -> None:
            for member in [entry] + others:
                if not member.removed and member.record.state is not State.DOWN:
                    self._schedule(member, delay)

        defer.gatherResults(stops).addCallback(restartAll)

    # -- stopping ---------------------------------------------------------

    def _signal(self, entry: _Entry, signum: int) -> None:
        record = entry.record
        if not record.pid:
            return
        try:
            if entry.watch is not None and not record.child:
                signal.pidfd_send_signal(entry.watch.fd, signum)
            elif record.child:
                # Its own session and process group: whatever it started
                # goes too.
                try:
                    os.killpg(record.pid, signum)
                except ProcessLookupError:
                    os.kill(record.pid, signum)
            elif processes.startTime(record.pid, self.proc) == record.startTime:
                os.kill(record.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError as e:
            self.log.error("cannot signal {name} (pid {pid}): {why}", name=entry.describe(),
                           pid=record.pid, why=e.strerror)

    def _stop(self, entry: _Entry) -> defer.Deferred[None]:
        """
        SIGTERM now, SIGKILL after the term wait; fires when it has ended.
        """
        record = entry.record
        if not record.pid:
            return defer.succeed(None)
        if entry.stopping is not None:
            d: defer.Deferred[None] = defer.Deferred()
            entry.stopping.addBoth(lambda r: (d.callback(None), r)[1])
            return d
        entry.stopping = defer.Deferred()
        result = entry.stopping
        termWait = record.config.policy.termWait
        self.log.info("stopping {name} (pid {pid}): SIGTERM, SIGKILL after {wait:g}s",
                      name=entry.describe(), pid=record.pid, wait=termWait)
        self._signal(entry, signal.SIGTERM)

        def kill() -> None:
            entry.killTimer = None
            self.log.warn("{name} (pid {pid}) ignored SIGTERM for {wait:g}s: SIGKILL",
                          name=entry.describe(), pid=record.pid, wait=termWait)
            self._signal(entry, signal.SIGKILL)

        entry.killTimer = self._later(termWait, kill)
        if entry.polled:
            # Polling every interval would make the stop wait that long.
            def check() -> None:
                if entry.stopping is None:
                    return
                if processes.startTime(record.pid, self.proc) != record.startTime:
                    self._ended(entry, "ended")
                else:
                    self._later(0.05, check)
            self._later(0.05, check)
        return result

    def _cancelTimers(self, entry: _Entry) -> None:
        for name in ("timer", "killTimer"):
            call = getattr(entry, name)
            if call is not None and call.active():
                call.cancel()
            setattr(entry, name, None)

    # -- taking over the table after a restart -----------------------------

    def _takeOver(self, record: Record) -> None:
        entry = _Entry(record)
        self.entries[record.slot] = entry
        record.child = False
        if record.state is State.DOWN:
            return
        if record.pid and record.startTime and (
            processes.startTime(record.pid, self.proc) == record.startTime
        ):
            record.state = State.OK
            self.log.info("{name}: pid {pid} still running; watching it again",
                          name=entry.describe(), pid=record.pid)
            self._watchOther(entry)
            self._save(entry)
            return
        successor = self._successor(record)
        if successor is not None:
            # keepalive stopped (killed?) after a restart and before the
            # table had the new pid: that process is the one to follow, not
            # a reason to start a second one.
            oldPid = record.pid
            record.pid, record.startTime = successor
            record.state = State.OK
            log = os.path.join(self.logDir, f"{record.config.basename}.{record.pid}")
            record.logPath = log if os.path.exists(log) else None
            self.log.warn(
                "{name}: pid {oldPid} has ended, but pid {pid} runs the same command in a "
                "session of its own, started after it: taking it over (keepalive stopped "
                "before it recorded that restart)",
                name=entry.describe(), oldPid=oldPid, pid=record.pid,
            )
            self._watchOther(entry)
            self._save(entry)
            return
        oldPid, record.pid = record.pid, 0
        if oldPid:
            self._died(entry, "ended while keepalive was not running", oldPid)
        else:
            self.log.info("{name}: not running; starting it", name=entry.describe())
            self._schedule(entry, 0)

    def _successor(self, record: Record) -> tuple[int, int] | None:
        """
        The process keepalive itself started in C{record}'s place after the
        one the table names: the same command line, a session leader (as
        keepalive starts its children), started after the recorded one.
        """
        if not (record.pid and record.startTime and record.spawned):
            return None
        for pid, started in processes.find(record.config.path, record.config.args,
                                           after=record.startTime + 1, proc=self.proc):
            if processes.sessionId(pid, self.proc) == pid and not any(
                e.record.pid == pid for e in self.entries.values()
            ):
                return pid, started
        return None

    # -- files ------------------------------------------------------------

    def _save(self, entry: _Entry) -> None:
        if self.writer is not None and not entry.removed:
            self.writer.save(entry.record)

    def _deleteLog(self, path: str | None) -> None:
        if not path:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.warn("cannot delete the log file {path}: {why}", path=path, why=e.strerror)

    def _deleteLogs(self, keep: Iterable[str | None]) -> None:
        """
        Delete the log files in the log directory that no process uses.
        """
        kept = {p for p in keep if p}
        try:
            names = os.listdir(self.logDir)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.logDir, name)
            if path in kept:
                continue
            if _LOG_NAME.match(name) or (name.startswith(".") and name.endswith(".starting")):
                self._deleteLog(path)
