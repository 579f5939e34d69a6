"""
The watchdog's health checks.

Each check is an object with a C{name} (the key of its retry timer, as the
original names it: the file or pid-file path, the address, the program, or
a pseudo-name such as C{<load-average>}) and a C{run()} method that returns
a result code (see L{sysmon.watchdog.codes}) or a L{Deferred} firing with
one.  C{run()} never raises and never blocks the reactor: anything that can
hang (a stat on a dead NFS server, an mmap that makes the kernel reclaim
memory, a test program) runs in a thread or a child process with a timeout
of its own, and a check that is still busy from an earlier round is not
started again.

The checks read C{/proc} and C{/sys} under configurable roots, so tests run
them on fixture trees.
"""

from __future__ import annotations

import errno
import mmap
import os
import resource
import stat
import threading
from typing import Any, Callable, Sequence

from twisted.internet import defer
from twisted.logger import Logger

from sysmon.beostat.procfs import ProcfsError, parseLoadavg, parseMeminfo, parseNetDev
from sysmon.children import ChildError, ChildResult, ChildRunner, UnsafeScript, checkScript
from sysmon.watchdog.codes import (
    ECHKILL,
    EDONTKNOW,
    EINVMEM,
    EMAXLOAD,
    ENOCHANGE,
    ENOERR,
    ENOLOAD,
    EREBOOT,
    ETOOHOT,
    ETOOLONG,
    describe,
)

__all__ = [
    "AllocatableMemoryCheck",
    "BlockingRunner",
    "Check",
    "FileCheck",
    "FileTableCheck",
    "ForkCheck",
    "InterfaceCheck",
    "LoadCheck",
    "MemoryCheck",
    "PidfileCheck",
    "PingCheck",
    "TemperatureCheck",
    "TestProgramCheck",
    "ThreadRunner",
    "childResultCode",
    "testDirectoryPrograms",
]

#: The original's name for the check that only proves fork() works.
FORK_TEST = "<fork test>"


class Check:
    """
    One health check.

    @ivar name: the name of its retry timer and in the log.
    @ivar timed: failures go through the retry timer (checks without an
        object, such as the file table, go straight to repair or shutdown).
    @ivar version: 1 for C{test-directory} programs, which repair
        themselves (C{prog repair <err> <prog>}); 0 for the rest, which the
        global C{repair-binary} repairs.
    """

    log = Logger()
    name = "<check>"
    timed = True
    version = 0

    def run(self) -> Any:
        """
        Run the check once.

        @return: a result code, or a L{Deferred} firing with one.
        """
        raise NotImplementedError

    def repairCommand(self, code: int, repairBinary: str | None) -> list[str] | None:
        """
        The repair program's argv for a failure of this check, or L{None}
        when there is none (the failure then goes to the shutdown decision).

        Version 0: C{[repair-binary, <err>, <name>]} (the name left out for
        checks without an object); version 1: C{[prog, "repair", <err>, prog]}.
        """
        if repairBinary is None:
            return None
        if self.timed:
            return [repairBinary, str(code), self.name]
        return [repairBinary, str(code)]

    def close(self) -> None:
        """
        Release what the check holds (the service is stopping).
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# -- running what may block ------------------------------------------------------


class BlockingRunner:
    """
    Runs a function that may block (a stat, an mmap, sync) off the reactor
    thread, with a timeout, and never more than one at a time per runner: while
    an earlier call is stuck, a new call answers L{ETOOLONG} at once instead
    of piling up threads behind a dead NFS server.

    This base class runs the function at once in the caller's thread: the
    behaviour tests with a fake clock want.  L{ThreadRunner} is the real one.
    """

    def __init__(self) -> None:
        self.stuck = False

    def call(self, function: Callable[[], int], timeout: float) -> defer.Deferred[int]:
        """
        @param function: returns a result code (or raises L{OSError}, whose
            errno is the result).
        @param timeout: seconds before the answer is L{ETOOLONG}.
        """
        return defer.succeed(_callForCode(function))


def _callForCode(function: Callable[[], int]) -> int:
    try:
        return function()
    except OSError as e:
        return e.errno or EREBOOT


class ThreadRunner(BlockingRunner):
    """
    Runs the function in a daemon thread of its own (a thread stuck in an
    uninterruptible stat must not hold up the reactor's thread pool or the
    process's exit) and answers L{ETOOLONG} when it takes longer than the
    timeout.
    """

    def __init__(self, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor

    def call(self, function: Callable[[], int], timeout: float) -> defer.Deferred[int]:
        if self.stuck:
            return defer.succeed(ETOOLONG)
        self.stuck = True
        d: defer.Deferred[int] = defer.Deferred()

        def finished(code: int) -> None:
            self.stuck = False
            if expiry.active():
                expiry.cancel()
            if not d.called:
                d.callback(code)

        def expired() -> None:
            if not d.called:
                d.callback(ETOOLONG)

        def work() -> None:
            code = _callForCode(function)
            self.reactor.callFromThread(finished, code)

        expiry = self.reactor.callLater(timeout, expired)
        threading.Thread(target=work, name="watchdog-check", daemon=True).start()
        return d


# -- /proc checks ----------------------------------------------------------------


def _readText(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


class FileTableCheck(Check):
    """
    The system can still open a file: opening C{/proc/uptime} fails with
    ENFILE when the file table is full, which is a reboot (L{EREBOOT}).
    """

    name = "<file-table>"
    timed = False

    def __init__(self, proc: str = "/proc") -> None:
        self.path = os.path.join(proc, "uptime")

    def run(self) -> int:
        try:
            with open(self.path, "rb"):
                return ENOERR
        except OSError as e:
            if e.errno == errno.ENFILE:
                self.log.critical("file table overflow: cannot open {path}", path=self.path)
                return EREBOOT
            self.log.error("cannot open {path}: {why}", path=self.path, why=e.strerror)
            return e.errno or EREBOOT


class LoadCheck(Check):
    """
    The 1-, 5- and 15-minute load averages (their integer parts) stay at or
    below their maxima (0 = not checked); above → L{EMAXLOAD}, an unreadable
    C{/proc/loadavg} → L{ENOLOAD}.
    """

    name = "<load-average>"

    def __init__(self, maxima: Sequence[int], proc: str = "/proc") -> None:
        self.maxima = tuple(maxima)
        self.path = os.path.join(proc, "loadavg")

    def run(self) -> int:
        try:
            load = parseLoadavg(_readText(self.path), self.path)
        except (OSError, ProcfsError) as e:
            self.log.error("cannot read the load average: {why}", why=_why(e))
            return ENOLOAD
        for minutes, value, maximum in zip((1, 5, 15), load[:3], self.maxima):
            if maximum > 0 and int(value) > maximum:
                self.log.error(
                    "loadavg {minutes}-minute {value:.2f} is higher than the given "
                    "threshold {maximum}", minutes=minutes, value=value, maximum=maximum,
                )
                return EMAXLOAD
        return ENOERR


def _why(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename or ''}: {error.strerror}".lstrip(": ")
    return str(error)


class MemoryCheck(Check):
    """
    Enough usable memory (C{MemAvailable}, else C{MemFree + Buffers +
    Cached}) for C{min-memory} pages, and no more than C{max-swap} pages of
    swap in use; either failing → ENOMEM (not repairable).  A meminfo that
    cannot be read → L{EINVMEM}.
    """

    name = "<free-memory>"

    def __init__(self, minPages: int, maxSwapPages: int, proc: str = "/proc",
                 pageSize: int | None = None) -> None:
        self.minPages = minPages
        self.maxSwapPages = maxSwapPages
        self.pageSize = pageSize or resource.getpagesize()
        self.path = os.path.join(proc, "meminfo")

    def run(self) -> int:
        try:
            memory = parseMeminfo(_readText(self.path), self.path)
        except (OSError, ProcfsError) as e:
            self.log.error("cannot read memory figures: {why}", why=_why(e))
            return EINVMEM
        if self.minPages > 0:
            usable = memory.available // self.pageSize
            if usable < self.minPages:
                self.log.error(
                    "memory {pages} pages is less than the minimum {minimum}",
                    pages=usable, minimum=self.minPages,
                )
                return errno.ENOMEM
        if self.maxSwapPages > 0:
            used = (memory.swapTotal - memory.swapFree) // self.pageSize
            if used > self.maxSwapPages:
                self.log.error(
                    "swap in use {pages} pages is more than the maximum {maximum}",
                    pages=used, maximum=self.maxSwapPages,
                )
                return errno.ENOMEM
        return ENOERR


class AllocatableMemoryCheck(Check):
    """
    C{allocatable-memory} pages can really be had: an anonymous mapping of
    that size populated at once (C{MAP_POPULATE}), off the reactor thread;
    a failure → its errno (ENOMEM, not repairable).
    """

    name = "<alloc-memory>"

    def __init__(self, pages: int, runner: BlockingRunner, timeout: float = 60.0,
                 pageSize: int | None = None) -> None:
        self.size = pages * (pageSize or resource.getpagesize())
        self.runner = runner
        self.timeout = timeout

    def _allocate(self) -> int:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        area = mmap.mmap(-1, self.size, flags=flags)
        area.close()
        return ENOERR

    def run(self) -> defer.Deferred[int]:
        d = self.runner.call(self._allocate, self.timeout)

        def report(code: int) -> int:
            if code != ENOERR:
                self.log.error("cannot allocate {size} bytes: {code} = '{text}'",
                               size=self.size, code=code, text=describe(code))
            return code

        return d.addCallback(report)


class TemperatureCheck(Check):
    """
    One temperature sensor (a sysfs file in milli-degrees Celsius) stays
    below C{max-temperature}: at or above → L{ETOOHOT} (not repairable);
    warnings at 90, 95 and 98 % of it.  A sensor that cannot be read is
    logged, not a failure (as the original).
    """

    WARNINGS = (90, 95, 98)

    def __init__(self, path: str, maximum: int, sys: str = "/sys") -> None:
        self.name = path
        self.path = _rerooted(path, "/sys", sys)
        self.maximum = maximum
        self._warned = 0
        self._unreadable = False

    def run(self) -> int:
        try:
            text = _readText(self.path).strip()
            milli = int(text.split()[0])
        except (OSError, ValueError, IndexError) as e:
            if not self._unreadable:
                self.log.warn("cannot read temperature sensor {path}: {why}",
                              path=self.name, why=_why(e) if isinstance(e, OSError) else "not a number")
            self._unreadable = True
            return ENOERR
        self._unreadable = False
        celsius = milli / 1000
        if celsius >= self.maximum:
            self.log.critical("it is too hot inside (temperature = {celsius:.1f} >= {maximum})",
                              celsius=celsius, maximum=self.maximum)
            return ETOOHOT
        band = max((p for p in self.WARNINGS if celsius * 100 >= self.maximum * p), default=0)
        if band > self._warned:
            self.log.warn(
                "temperature at {percent}% of the maximum ({celsius:.1f} of {maximum}) on {path}",
                percent=band, celsius=celsius, maximum=self.maximum, path=self.name,
            )
        self._warned = band
        return ENOERR


def _rerooted(path: str, top: str, root: str) -> str:
    if root != top and (path == top or path.startswith(top + "/")):
        return root + path[len(top):]
    return path


class InterfaceCheck(Check):
    """
    An interface keeps receiving: its RX byte counter in C{/proc/net/dev}
    must change between two rounds, else ENETUNREACH.

    Unlike the original, which passes silently when the interface is not
    in the file at all, a missing interface is ENODEV: a NIC that vanished
    receives nothing either.
    """

    def __init__(self, interface: str, proc: str = "/proc") -> None:
        self.name = interface
        self.path = os.path.join(proc, "net", "dev")
        self.last: int | None = None

    def run(self) -> int:
        try:
            interfaces = parseNetDev(_readText(self.path), self.path)
        except (OSError, ProcfsError) as e:
            self.log.error("cannot read {path}: {why}", path=self.path, why=_why(e))
            return e.errno if isinstance(e, OSError) and e.errno else errno.EIO
        for row in interfaces:
            if row.name == self.name:
                break
        else:
            self.log.error("interface {name} is not in {path}", name=self.name, path=self.path)
            self.last = None
            return errno.ENODEV
        if self.last is not None and row.rxBytes == self.last:
            self.log.error("device {name} did not receive anything since last check",
                           name=self.name)
            return errno.ENETUNREACH
        self.last = row.rxBytes
        return ENOERR


# -- files and processes ---------------------------------------------------------


class FileCheck(Check):
    """
    A file can be stat()ed (off the reactor thread, at most C{timeout}
    seconds: an NFS server may hang; too long → L{ETOOLONG}); with C{change},
    its modification time must have changed within that many seconds,
    measured on this daemon's clock as the original does (so a file server
    with a skewed clock does not matter), else L{ENOCHANGE}.
    """

    def __init__(self, path: str, change: int, runner: BlockingRunner,
                 now: Callable[[], float], timeout: float = 5.0) -> None:
        self.name = path
        self.change = change
        self.runner = runner
        self.now = now
        self.timeout = timeout
        self.mtime: float | None = None
        self.changed = now()
        self.stuck = False

    def _stat(self) -> int:
        self._result = os.stat(self.name).st_mtime
        return ENOERR

    def run(self) -> defer.Deferred[int]:
        return self.runner.call(self._stat, self.timeout).addCallback(self._judge)

    def _judge(self, code: int) -> int:
        if code == ETOOLONG:
            if not self.stuck:
                self.log.error("stat of {path} did not return within {timeout}s "
                               "(still waiting for it)", path=self.name, timeout=self.timeout)
            self.stuck = True
            return code
        if self.stuck:
            self.log.info("stat of {path} returned again", path=self.name)
            self.stuck = False
        if code != ENOERR:
            self.log.error("cannot stat {path} (errno = {code} = '{text}')",
                           path=self.name, code=code, text=describe(code))
            return code
        if not self.change:
            return ENOERR
        now = self.now()
        if self._result != self.mtime:
            self.mtime = self._result
            self.changed = now
        waited = int(now - self.changed)
        if waited > self.change:
            self.log.error("file {path} was not changed in {waited} seconds (more than {change})",
                           path=self.name, waited=waited, change=self.change)
            return ENOCHANGE
        return ENOERR


class PidfileCheck(Check):
    """
    The process named by a pid file is alive: the file holds a pid and
    C{kill(pid, 0)} succeeds.  A missing or unreadable file → its errno;
    no pid in it → EINVAL; no such process → ESRCH.
    """

    def __init__(self, path: str, kill: Callable[[int, int], None] = os.kill) -> None:
        self.name = path
        self.kill = kill

    def run(self) -> int:
        try:
            text = _readText(self.name)
        except OSError as e:
            self.log.error("cannot open pid file {path}: {why}", path=self.name, why=e.strerror)
            return e.errno or errno.EIO
        words = text.split()
        try:
            pid = int(words[0])
            if pid <= 0:
                raise ValueError(pid)
        except (ValueError, IndexError):
            self.log.error("pid file {path} holds no process id", path=self.name)
            return errno.EINVAL
        try:
            self.kill(pid, 0)
        except PermissionError:
            return ENOERR  # it exists; we may not signal it
        except OSError as e:
            self.log.error("process {pid} from {path} is gone: {why}",
                           pid=pid, path=self.name, why=e.strerror)
            return e.errno or errno.ESRCH
        return ENOERR


class PingCheck(Check):
    """
    A host answers ICMP echo: C{count} attempts, each waiting C{wait}
    seconds; the first reply passes; none → ENETUNREACH.

    @param pinger: a L{sysmon.watchdog.icmp.Pinger} (opened by the service).
    """

    def __init__(self, address: str, pinger: Any, count: int, wait: float) -> None:
        self.name = address
        self.pinger = pinger
        self.count = count
        self.wait = wait

    def run(self) -> defer.Deferred[int]:
        def report(code: int) -> int:
            if code != ENOERR:
                self.log.error("no answer from {address} to {count} pings: {code} = '{text}'",
                               address=self.name, count=self.count, code=code,
                               text=describe(code))
            return code

        return self.pinger.ping(self.name, self.count, self.wait).addCallback(report)


# -- programs ---------------------------------------------------------------------


def childResultCode(result: ChildResult) -> int:
    """
    A test or repair program's outcome as a result code: its exit status;
    L{ETOOLONG} when it ran out of time (and was killed with its process
    group); L{ECHKILL} when a signal ended it.
    """
    if result.timedOut:
        return ETOOLONG
    if result.signal is not None:
        return ECHKILL
    return result.exitCode or ENOERR


def _startFailure(program: str, error: Exception) -> int:
    """
    The code for a program that could not be started: the original's child
    exits with the errno of its failed exec; a failed fork is L{EREBOOT}.
    """
    if isinstance(error, ChildError) and error.errno in (errno.ENOENT, errno.EACCES):
        return error.errno
    return EREBOOT


class TestProgramCheck(Check):
    """
    A test program: a C{test-binary} (version 0, run with no arguments) or
    an executable in C{test-directory} (version 1, run as C{prog test} and
    repaired with C{prog repair <err> <prog>}).  Its exit status is the
    result; a signal → L{ECHKILL}; longer than C{timeout} → its process
    group is killed and the result is L{ETOOLONG}.  Its output is appended to
    C{test-bin.stdout} and C{test-bin.stderr} in C{log-dir}.
    """

    def __init__(self, path: str, runner: ChildRunner, logDir: str,
                 timeout: float | None, version: int = 0) -> None:
        self.name = path
        self.runner = runner
        self.logDir = logDir
        self.timeout = timeout or None
        self.version = version

    def argv(self) -> list[str]:
        return [self.name, "test"] if self.version == 1 else [self.name]

    def repairCommand(self, code: int, repairBinary: str | None) -> list[str] | None:
        if self.version == 1:
            return [self.name, "repair", str(code), self.name]
        return super().repairCommand(code, repairBinary)

    def run(self) -> defer.Deferred[int]:
        d = self.runner.run(
            self.argv(),
            timeout=self.timeout,
            stdoutPath=os.path.join(self.logDir, "test-bin.stdout"),
            stderrPath=os.path.join(self.logDir, "test-bin.stderr"),
        )
        return d.addCallbacks(self._ended, self._failed)

    def _ended(self, result: ChildResult) -> int:
        code = childResultCode(result)
        if result.timedOut:
            self.log.error("test binary {program} exceeded time limit {timeout}",
                           program=self.name, timeout=self.timeout)
        elif code == ECHKILL:
            self.log.error("test binary {program} was killed by uncaught signal {signal}",
                           program=self.name, signal=result.signal)
        elif code != ENOERR:
            self.log.error("test binary {program} returned {code} = '{text}'",
                           program=self.name, code=code, text=describe(code))
        return code

    def _failed(self, failure: Any) -> Any:
        if failure.check(defer.CancelledError):
            return failure
        code = _startFailure(self.name, failure.value)
        self.log.error("cannot run test binary {program}: {why} ({code} = '{text}')",
                       program=self.name, why=str(failure.value), code=code,
                       text=describe(code))
        return code


class ForkCheck(Check):
    """
    With no test programs configured, each round still proves that a
    process can be started (the original's "<fork test>"): C{true} is run;
    when it cannot be started the result is L{EREBOOT}.
    """

    name = FORK_TEST

    def __init__(self, runner: ChildRunner, program: str = "true") -> None:
        self.runner = runner
        self.program = program

    def run(self) -> defer.Deferred[int]:
        def failed(failure: Any) -> Any:
            if failure.check(defer.CancelledError):
                return failure
            self.log.error("process fork failed: {why}", why=str(failure.value))
            return EREBOOT

        return self.runner.run([self.program], timeout=60).addCallbacks(
            lambda result: ENOERR, failed)


def testDirectoryPrograms(directory: str | None,
                          check: Callable[[str], None] = checkScript,
                          log: Logger | None = None) -> list[str]:
    """
    The version-1 test programs in C{directory}: regular files the owner
    may read and execute, not dot-files, in name order.  One that fails
    the safety check (L{checkScript}: writable by group or others, owned by
    someone else) is left out with an error naming the reason.

    @return: their paths; none when the directory does not exist.
    """
    log = log or Check.log
    if not directory:
        return []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        log.error("cannot read test directory {path}: {why}", path=directory, why=e.strerror)
        return []
    programs = []
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_mode & 0o500) != 0o500:
            continue
        try:
            check(path)
        except UnsafeScript as e:
            log.error("not running test program {path}: {why}", path=path, why=e.reason)
            continue
        programs.append(path)
    return programs
