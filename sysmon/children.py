"""
Run external programs from the reactor: hook scripts, test and repair
binaries, restart scripts.

L{ChildRunner.run} starts a program in a session (and so a process group)
of its own, with stdin from C{/dev/null} (or fed with given bytes), its output captured (bounded) or
sent to files, and an optional timeout.  When the timeout expires the whole
process group gets SIGTERM and, after a grace period, SIGKILL, so a script
that hangs is killed together with everything it started.  The outcome
comes back as a L{ChildResult} in a L{Deferred}; the reactor is never
blocked.

L{checkScript} is the safety rule for programs the daemons run on an
operator's behalf: a regular, executable file, owned by root or by the
daemon's user, and not writable by group or others.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import signal
import stat
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "ChildError",
    "ChildResult",
    "ChildRunner",
    "UnsafeScript",
    "checkScript",
]

#: util-linux's setsid(1): it puts the program in a new session and process
#: group and then execs it (no fork: a child of ours is never a group leader).
SETSID = "setsid"


class ChildError(Exception):
    """
    A program could not be started at all (not found, not executable, bad
    output file).

    @ivar errno: the errno of the failure (ENOENT for a program that does
        not exist, EACCES for one that cannot be executed, the errno of a
        failed fork), or L{None} when there is none.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class UnsafeScript(Exception):
    """
    A script failed L{checkScript}.

    @ivar path: the script.
    @ivar reason: why it was refused, for the log.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"refusing to run {path}: {reason}")


def _userName(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def checkScript(path: str, allowedUids: Iterable[int] | None = None) -> None:
    """
    Check that C{path} is safe to run on the daemon's behalf.

    @param allowedUids: who may own it; by default root and the effective
        user of this process.
    @raise UnsafeScript: with the reason, if it is missing, not a regular
        file, not executable, owned by someone else, or writable by group or
        others.
    """
    allowed = {0, os.geteuid()} if allowedUids is None else set(allowedUids)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnsafeScript(path, "it does not exist") from None
    except OSError as e:
        raise UnsafeScript(path, f"cannot stat it: {e.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeScript(path, "it is not a regular file")
    if not mode & 0o111:
        raise UnsafeScript(path, f"it is not executable (mode {mode:04o})")
    if st.st_uid not in allowed:
        owners = " or ".join(sorted(_userName(u) for u in allowed))
        raise UnsafeScript(
            path, f"it is owned by {_userName(st.st_uid)}, not by {owners}"
        )
    if mode & 0o022:
        raise UnsafeScript(
            path, f"it is writable by group or others (mode {mode:04o})"
        )


@attrs.frozen
class ChildResult:
    """
    How a child process ended.

    @ivar argv: the command that ran.
    @ivar pid: its process id.
    @ivar exitCode: its exit status, or L{None} if a signal ended it.
    @ivar signal: the signal that ended it, or L{None}.
    @ivar timedOut: it was still running when its timeout expired, or when
        it was cancelled or the runner stopped, and so was killed with its
        process group.
    @ivar stdout: the captured standard output (the last C{maxOutput} bytes)
        or C{b""} when it went to a file.
    @ivar stderr: the same for standard error.
    @ivar truncated: more output was produced than was kept.
    @ivar duration: seconds from start to end.
    """

    argv: tuple[str, ...]
    pid: int
    exitCode: int | None
    signal: int | None
    timedOut: bool
    stdout: bytes
    stderr: bytes
    truncated: bool
    duration: float

    @property
    def succeeded(self) -> bool:
        """
        It exited by itself with status 0.
        """
        return self.exitCode == 0 and not self.timedOut

    def describe(self) -> str:
        """
        One phrase for the log: "exited with status 3", "killed by SIGKILL",
        "timed out after 5.0s and was killed by SIGTERM".
        """
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            ended = f"was killed by {name}"
        else:
            ended = f"exited with status {self.exitCode}"
        if self.timedOut:
            return f"timed out after {self.duration:.1f}s and {ended}"
        return ended


class _Tail:
    """
    Keeps the last C{limit} bytes written to it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self.data += data
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess


class _ChildProtocol(ProcessProtocol):
    """
    Collects one child's output and status and fires C{done} at its end.
    """

    def __init__(
        self,
        runner: ChildRunner,
        argv: tuple[str, ...],
        timeout: float | None,
        stdinData: bytes | None = None,
    ):
        self.runner = runner
        self.stdinData = stdinData
        self.argv = argv
        self.timeout = timeout
        self.out = _Tail(runner.maxOutput)
        self.err = _Tail(runner.maxOutput)
        self.exitCode: int | None = None
        self.signal: int | None = None
        self.exited = False
        self.timedOut = False
        self.started = time.monotonic()
        self.calls: list[Any] = []
        self.done: defer.Deferred[ChildResult] = defer.Deferred(self._cancel)
        self.pid = 0

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        if self.stdinData is not None:
            # The pipe is written without blocking; closing it waits for the
            # buffered data to go first.  A child that exits without reading
            # it all just ends the pipe (no error for us).
            self.transport.writeToChild(0, self.stdinData)
            self.transport.closeChildFD(0)
            self.stdinData = None
        if self.timeout is not None:
            self.calls.append(self.runner.reactor.callLater(self.timeout, self._expire))

    def outReceived(self, data: bytes) -> None:
        self.out.add(data)

    def errReceived(self, data: bytes) -> None:
        self.err.add(data)

    def processExited(self, reason: Failure) -> None:
        self.exited = True
        self.exitCode = getattr(reason.value, "exitCode", None)
        self.signal = getattr(reason.value, "signal", None)
        if self.signal is not None:
            self.exitCode = None

    def processEnded(self, reason: Failure) -> None:
        if not self.exited:
            self.processExited(reason)
        if self.timedOut:
            # Whatever it left behind in its group goes too.
            self._signalGroup(signal.SIGKILL)
        for call in self.calls:
            if call.active():
                call.cancel()
        self.runner._ended(self)
        result = ChildResult(
            argv=self.argv,
            pid=self.pid,
            exitCode=self.exitCode,
            signal=self.signal,
            timedOut=self.timedOut,
            stdout=bytes(self.out.data),
            stderr=bytes(self.err.data),
            truncated=bool(self.out.dropped or self.err.dropped),
            duration=time.monotonic() - self.started,
        )
        if not self.done.called:
            self.done.callback(result)

    def _signalGroup(self, signum: int) -> None:
        if not self.pid:
            return
        try:
            self.runner.killpg(self.pid, signum)
        except ProcessLookupError:
            # The group may not exist yet (setsid has not run) or any more.
            try:
                self.runner.kill(self.pid, signum)
            except ProcessLookupError:
                pass
        except PermissionError:
            self.runner.log.warn(
                "cannot signal process group {pid} of {argv}", pid=self.pid, argv=self.argv
            )

    def _expire(self) -> None:
        """
        The timeout expired: SIGTERM the group now, SIGKILL it after the grace.
        """
        self.timedOut = not self.exited
        self.runner.log.warn(
            "{argv} (pid {pid}) still running after {timeout}s: terminating its process group",
            argv=list(self.argv),
            pid=self.pid,
            timeout=self.timeout,
        )
        self._signalGroup(signal.SIGTERM)
        self.calls.append(
            self.runner.reactor.callLater(
                self.runner.killGrace, self._signalGroup, signal.SIGKILL
            )
        )

    def kill(self) -> None:
        """
        End it now (cancelled, or the runner is stopping): TERM, then KILL.
        """
        if self.exited and not self.timedOut:
            self._signalGroup(signal.SIGKILL)
            return
        for call in self.calls:
            if call.active():
                call.cancel()
        self.calls = []
        self.timeout = 0
        self._expire()

    def _cancel(self, d: defer.Deferred[ChildResult]) -> None:
        self.kill()


class ChildRunner:
    """
    Starts programs as child processes and reports how they ended.

    @ivar reactor: the reactor (injected; the global one by default).
    @ivar killGrace: seconds between SIGTERM and SIGKILL.
    @ivar maxOutput: bytes of each output stream that are kept.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any = None,
        killGrace: float = 5.0,
        maxOutput: int = 64 * 1024,
        killpg: Callable[[int, int], None] = os.killpg,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        """
        @param killpg: signals a process group (injected so that tests with a
            fake reactor never signal real processes).
        @param kill: signals one process.
        """
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.killpg = killpg
        self.kill = kill
        self.killGrace = killGrace
        self.maxOutput = maxOutput
        self._running: set[_ChildProtocol] = set()

    @property
    def running(self) -> int:
        """
        How many children are still running.
        """
        return len(self._running)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        timeout: float | None = None,
        stdoutPath: str | None = None,
        stderrPath: str | None = None,
        stdinData: bytes | None = None,
    ) -> defer.Deferred[ChildResult]:
        """
        Start C{argv} and return a L{Deferred} that fires with its
        L{ChildResult} (a non-zero exit is a result, not a failure).
        Cancelling the Deferred kills the child's process group.

        @param env: its whole environment; by default this process's.
        @param path: its working directory.
        @param uid: run as this user (needs root).
        @param gid: run as this group (needs root).
        @param timeout: seconds it may run before its process group is
            terminated; L{None} for no limit.
        @param stdoutPath: append standard output to this file instead of
            capturing it.
        @param stderrPath: the same for standard error (may equal
            C{stdoutPath}).
        @param stdinData: write these bytes to its standard input (a pipe)
            and then close it; by default its standard input is
            C{/dev/null}.
        @return: a Deferred that fails with L{ChildError} if the program
            cannot be started at all.
        """
        argv = tuple(str(a) for a in argv)
        if not argv:
            return defer.fail(ChildError("empty command"))
        environ = dict(os.environ if env is None else env)
        try:
            executable = self._resolve(argv[0], environ, path)
            setsid = shutil.which(SETSID)
            if setsid is None:
                raise ChildError("setsid(1) from util-linux is not installed")
            fds, opened = self._childFDs(stdoutPath, stderrPath, stdinData is not None)
        except ChildError as e:
            return defer.fail(e)
        child = _ChildProtocol(self, argv, timeout, stdinData)
        try:
            self.reactor.spawnProcess(
                child,
                setsid,
                (SETSID, executable) + argv[1:],
                env=environ,
                path=path,
                uid=uid,
                gid=gid,
                childFDs=fds,
            )
        except OSError as e:
            return defer.fail(ChildError(f"cannot start {argv[0]}: {e}", e.errno))
        finally:
            for fd in opened:
                os.close(fd)
        self._running.add(child)
        return child.done

    def _resolve(self, program: str, environ: Mapping[str, str], cwd: str | None) -> str:
        if "/" in program:
            candidate = program if cwd is None else os.path.join(cwd, program)
            if not os.path.exists(candidate):
                raise ChildError(f"cannot run {program}: no such file", errno.ENOENT)
            if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
                raise ChildError(f"cannot run {program}: not an executable file",
                                 errno.EACCES)
            return program
        found = shutil.which(program, path=environ.get("PATH", os.defpath))
        if found is None:
            raise ChildError(f"cannot run {program}: not found in PATH", errno.ENOENT)
        return found

    def _childFDs(
        self, stdoutPath: str | None, stderrPath: str | None, stdinPipe: bool = False
    ) -> tuple[dict[int, Any], list[int]]:
        opened: list[int] = []
        byPath: dict[str, int] = {}

        def openOutput(p: str) -> int:
            if p not in byPath:
                try:
                    fd = os.open(
                        p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640
                    )
                except OSError as e:
                    for fd in opened:
                        os.close(fd)
                    raise ChildError(f"cannot open output file {p}: {e.strerror}",
                                     e.errno) from None
                opened.append(fd)
                byPath[p] = fd
            return byPath[p]

        stdin: Any
        if stdinPipe:
            stdin = "w"
        else:
            stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            opened.append(stdin)
        fds: dict[int, Any] = {
            0: stdin,
            1: openOutput(stdoutPath) if stdoutPath else "r",
            2: openOutput(stderrPath) if stderrPath else "r",
        }
        return fds, opened

    def _ended(self, child: _ChildProtocol) -> None:
        self._running.discard(child)

    def stopAll(self) -> defer.Deferred[list[ChildResult]]:
        """
        Kill every running child (TERM, KILL after the grace) and fire when
        they have all ended.  For C{stopService}.
        """
        children = list(self._running)
        for child in children:
            child.kill()
        return defer.gatherResults([child.done for child in children])

