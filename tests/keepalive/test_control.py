"""
Tests for L{sysmon.keepalive.control}: every command through a real UNIX
socket (the real reactor, a socket under the test's temporary directory)
against a supervisor that records its calls and answers what the test
says; errors crossing the socket; the control socket's life (stale socket,
a live keepalive, mode 0600, removal); the client's errors.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from sysmon.keepalive import control
from sysmon.keepalive.errors import (
    AlreadyRegistered,
    BadConfig,
    BadRequest,
    KeepaliveError,
    KeepaliveNotRunning,
    NoSuchProcess,
    NotRegistered,
    Refused,
)


def theReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def shortDirectory(case: TestCase) -> str:
    """
    A new directory under trial's temporary directory with a short
    absolute path (a UNIX socket path holds at most 107 bytes, and
    C{mktemp()} paths are longer), removed after the test.
    """
    path = tempfile.mkdtemp(prefix="ka", dir=os.getcwd())
    case.addCleanup(shutil.rmtree, path, True)
    return path


class RecordingSupervisor:
    """
    The supervisor interface L{control.ControlProtocol} calls, recording
    each call and answering from C{answers}: a value (answered at once), a
    L{Deferred} (answered when the test fires it) or an exception (raised).

    @ivar calls: C{(method, positional args, keyword args)} in call order.
    @ivar terminated: fires when C{terminate} is called.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.answers: dict[str, Any] = {
            "register": [3],
            "adopt": 4,
            "unregister": [5, 6],
            "quit": [1, 2],
            "info": dict(
                pid=4242, started=1700000000.25, table="/t/keepalive.data",
                control="/run/keepalive/keepalivecfg", processes=7,
            ),
        }
        self.terminated: defer.Deferred[None] = defer.Deferred()
        self.onTerminate: Any = None

    def _answer(self, name: str, *args: Any, **kw: Any) -> Any:
        self.calls.append((name, args, kw))
        value = self.answers[name]
        if isinstance(value, BaseException):
            raise value
        return value

    def register(self, configPath, *, errorLimit, matchArgs, downCode, rejectCode):
        return self._answer(
            "register", configPath, errorLimit=errorLimit, matchArgs=matchArgs,
            downCode=downCode, rejectCode=rejectCode,
        )

    def adopt(self, configPath, pid, *, matchArgs):
        return self._answer("adopt", configPath, pid, matchArgs=matchArgs)

    def unregister(self, *, path, args, pid, group, slot, kill, matchArgs):
        return self._answer(
            "unregister", path=path, args=args, pid=pid, group=group, slot=slot,
            kill=kill, matchArgs=matchArgs,
        )

    def quit(self):
        return self._answer("quit")

    def info(self):
        return self._answer("info")

    def terminate(self):
        self.calls.append(("terminate", (), {}))
        if self.onTerminate is not None:
            self.onTerminate()
        self.terminated.callback(None)


class ServerCase(TestCase):
    """
    Runs a L{control.ControlServer} for the recording supervisor on a real
    socket, stopped after the test.
    """

    def setUp(self) -> None:
        self.supervisor = RecordingSupervisor()
        self.path = os.path.join(shortDirectory(self), "control")
        self.events: list[dict[str, Any]] = []
        self.patch(control.ControlProtocol, "log", Logger(observer=self.events.append))
        self.server = self.startServer(self.path)

    def startServer(self, path: str) -> control.ControlServer:
        server = control.ControlServer(self.supervisor, path, reactor=theReactor())
        server.privilegedStartService()
        server.startService()
        self.addCleanup(lambda: server.running and server.stopService())
        return server

    def call(self, command: type, **kw: Any) -> defer.Deferred[dict[str, Any]]:
        return control.call(self.path, command, theReactor(), **kw)


class CommandTests(ServerCase):
    """
    Each command reaches the supervisor with its arguments intact and its
    answer reaches the client.
    """

    async def test_ping(self) -> None:
        """
        Ping answers with the supervisor's C{info()}.
        """
        answer = await self.call(control.Ping)
        self.assertEqual(answer, self.supervisor.answers["info"])
        self.assertEqual(self.supervisor.calls, [("info", (), {})])

    async def test_register(self) -> None:
        """
        Register passes the config path, the error limit and the down and
        reject codes (given or not) and C{matchArgs}, and answers with the
        slots.
        """
        self.supervisor.answers["register"] = defer.succeed([3, 4, 9])
        answer = await self.call(
            control.Register, config="/etc/keepalive.d/wéb.cfg", errorLimit=5,
            matchArgs=True, downCode=3, rejectCode=0,
        )
        self.supervisor.answers["register"] = [3]
        self.assertEqual(answer, {"slots": [3, 4, 9]})
        answer = await self.call(control.Register, config="/c.cfg", matchArgs=False)
        self.assertEqual(answer, {"slots": [3]})
        self.assertEqual(
            self.supervisor.calls,
            [
                ("register", ("/etc/keepalive.d/wéb.cfg",),
                 dict(errorLimit=5, matchArgs=True, downCode=3, rejectCode=0)),
                ("register", ("/c.cfg",),
                 dict(errorLimit=None, matchArgs=False, downCode=None, rejectCode=None)),
            ],
        )

    async def test_adopt(self) -> None:
        """
        Adopt passes the config path, the pid and C{matchArgs}, and answers
        with the slot.
        """
        answer = await self.call(control.Adopt, config="/a.cfg", pid=31337, matchArgs=True)
        self.assertEqual(answer, {"slot": 4})
        self.assertEqual(
            self.supervisor.calls, [("adopt", ("/a.cfg", 31337), dict(matchArgs=True))]
        )

    async def test_unregister(self) -> None:
        """
        Unregister passes each selector (path with arguments that hold
        spaces, tabs, newlines and non-ASCII; pid; group; slot) and the
        C{kill} and C{matchArgs} flags; selectors not sent arrive as
        L{None}; an empty argument list stays empty.
        """
        requests = [
            dict(path="/usr/bin/x", args=["a b", "\tc\n", "ü", ""], kill=True, matchArgs=True),
            dict(path="/usr/bin/x", args=[], kill=False, matchArgs=False),
            dict(pid=77, kill=False, matchArgs=False),
            dict(group="web", kill=True, matchArgs=False),
            dict(slot=12, kill=False, matchArgs=False),
        ]
        for request in requests:
            answer = await self.call(control.Unregister, **request)
            self.assertEqual(answer, {"slots": [5, 6]})
        expected = []
        for request in requests:
            full = dict(path=None, args=None, pid=None, group=None, slot=None)
            full.update(request)
            if full["args"] is not None:
                full["args"] = tuple(full["args"])
            expected.append(("unregister", (), full))
        self.assertEqual(self.supervisor.calls, expected)

    async def test_quit(self) -> None:
        """
        Quit answers with the stopped slots, and only after the answer is
        on its way does the server call C{terminate()} (here, as in
        keepalive, terminating stops the control server: the client still
        gets its answer).
        """
        answered: defer.Deferred[list[int]] = defer.Deferred()
        self.supervisor.answers["quit"] = answered
        self.supervisor.onTerminate = self.server.stopService
        result = self.call(control.Quit)
        while not self.supervisor.calls:
            await deferLater(0)
        answered.callback([1, 2])
        self.assertEqual([c[0] for c in self.supervisor.calls], ["quit"])
        answer = await result
        self.assertEqual(answer, {"stopped": [1, 2]})
        await self.supervisor.terminated
        self.assertEqual([c[0] for c in self.supervisor.calls], ["quit", "terminate"])

    async def test_quitAnsweredAtOnce(self) -> None:
        """
        When the supervisor answers Quit at once (the answer is written
        while the request is read, and C{terminate} runs on the next turn
        of the reactor, before that write reaches the socket), stopping
        the server from C{terminate} still delivers the answer.
        """
        self.supervisor.onTerminate = self.server.stopService
        answer = await self.call(control.Quit)
        self.assertEqual(answer, {"stopped": [1, 2]})
        await self.supervisor.terminated
        self.assertEqual([c[0] for c in self.supervisor.calls], ["quit", "terminate"])

    async def test_quitFails(self) -> None:
        """
        A Quit that fails is answered with its error and keepalive is not
        terminated.
        """
        self.supervisor.answers["quit"] = Refused("not now")
        e = await self.assertFailure(self.call(control.Quit), Refused)
        self.assertEqual(str(e), "not now")
        # Client and server share this reactor: a terminate scheduled with
        # the answer would have run before the answer could be read.
        self.assertEqual([c[0] for c in self.supervisor.calls], ["quit"])

    async def test_logsPeerCredentials(self) -> None:
        """
        Each command is logged at info with its request and the client's
        uid and pid, from C{SO_PEERCRED}.
        """
        await self.call(control.Adopt, config="/a.cfg", pid=9, matchArgs=False)
        logged = [e for e in self.events if e.get("command") == "adopt"]
        self.assertEqual(len(logged), 1)
        event = logged[0]
        self.assertEqual(event["log_level"].name, "info")
        self.assertEqual(event["uid"], os.getuid())
        self.assertEqual(event["peerPid"], os.getpid())
        self.assertEqual(event["request"], dict(config="/a.cfg", pid=9, matchArgs=False))
        self.assertNotIn("/a.cfg", event["log_format"])


def deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(theReactor(), seconds, lambda: None)


class ErrorTests(ServerCase):
    """
    Errors cross the socket as the same class with the same message;
    anything else becomes a logged internal error.
    """

    async def test_errorClassesAndMessages(self) -> None:
        """
        Each L{KeepaliveError} class, raised at once or failed later by the
        supervisor, reaches the client as exactly that class with the same
        message (non-ASCII and newlines included).
        """
        classes = [
            AlreadyRegistered, BadConfig, BadRequest, NoSuchProcess, NotRegistered,
            Refused, KeepaliveError,
        ]
        for cls in classes:
            for later in (False, True):
                message = f"{cls.__name__}: /etc/keepalive.d/ü.cfg:3: bad\nsecond line"
                error = cls(message)
                self.supervisor.answers["register"] = (
                    defer.fail(error) if later else error
                )
                d = self.call(control.Register, config="/x.cfg", matchArgs=False)
                e = await self.assertFailure(d, KeepaliveError)
                self.assertIs(type(e), cls)
                self.assertEqual(str(e), message)

    async def test_internalError(self) -> None:
        """
        An exception that is not a L{KeepaliveError} is logged with its
        traceback and answered as C{KeepaliveError("internal error: ...")};
        the connection stays usable.
        """
        self.supervisor.answers["unregister"] = ZeroDivisionError("division by zero")
        proto = await control.connect(self.path, theReactor())
        self.addCleanup(proto.transport.loseConnection)
        d = proto.callRemote(control.Unregister, slot=1, kill=False, matchArgs=False)
        e = await self.assertFailure(d, KeepaliveError)
        self.assertIs(type(e), KeepaliveError)
        self.assertEqual(str(e), "internal error: ZeroDivisionError: division by zero")
        failures = [e for e in self.events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0]["log_failure"].value, ZeroDivisionError)
        self.assertEqual(failures[0]["command"], "unregister")
        answer = await proto.callRemote(control.Ping)
        self.assertEqual(answer["pid"], 4242)

    async def test_badAnswer(self) -> None:
        """
        A supervisor answer that does not fit the command (a slot that is
        not a number) is an internal error too, not a dropped connection.
        """
        self.supervisor.answers["register"] = ["three"]
        d = self.call(control.Register, config="/x.cfg", matchArgs=False)
        e = await self.assertFailure(d, KeepaliveError)
        self.assertTrue(str(e).startswith("internal error: ValueError"), str(e))
        self.assertEqual(len([e for e in self.events if "log_failure" in e]), 1)

    async def test_longMessageBounded(self) -> None:
        """
        An error message longer than an AMP value can carry arrives
        shortened, as the same class, instead of breaking the answer.
        """
        self.supervisor.answers["adopt"] = NoSuchProcess("x" * 100000)
        d = self.call(control.Adopt, config="/a.cfg", pid=1, matchArgs=False)
        e = await self.assertFailure(d, NoSuchProcess)
        self.assertTrue(str(e).startswith("xxxx"))
        self.assertLess(len(str(e)), 65535)

    async def test_closedBeforeAnswer(self) -> None:
        """
        When keepalive stops while a command is pending, the client gets a
        L{KeepaliveError} saying so.
        """
        self.supervisor.answers["register"] = defer.Deferred()
        d = self.call(control.Register, config="/x.cfg", matchArgs=False)
        while not self.supervisor.calls:
            await deferLater(0)
        await self.server.stopService()
        e = await self.assertFailure(d, KeepaliveError)
        self.assertEqual(
            str(e),
            f"keepalive closed the control connection before answering ({self.path})",
        )


class ServerSocketTests(ServerCase):
    """
    The control socket's life: where and how it is made, what happens to
    an old one, its removal.
    """

    def test_mode(self) -> None:
        """
        The control socket is a socket with mode 0600.
        """
        st = os.stat(self.path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    async def test_parentCreated(self) -> None:
        """
        A missing parent directory is created, mode 0755, and the server
        answers there.
        """
        self.path = os.path.join(shortDirectory(self), "run", "keepalive", "cfg")
        self.startServer(self.path)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode), 0o755)
        answer = await self.call(control.Ping)
        self.assertEqual(answer["processes"], 7)

    async def test_staleSocketRemoved(self) -> None:
        """
        A socket nobody listens on (left by a keepalive that died) is
        replaced.
        """
        self.path = os.path.join(shortDirectory(self), "control")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.path)
        stale.close()
        self.startServer(self.path)
        answer = await self.call(control.Ping)
        self.assertEqual(answer["pid"], 4242)

    async def test_liveSocketRefused(self) -> None:
        """
        A second server on the path of a running one refuses to start,
        naming the path, and leaves the running one answering.
        """
        second = control.ControlServer(self.supervisor, self.path, reactor=theReactor())
        e = self.assertRaises(ControlSocketError, second.privilegedStartService)
        self.assertEqual(str(e), f"another keepalive is running on {self.path}")
        self.assertIsInstance(e, KeepaliveError)
        answer = await self.call(control.Ping)
        self.assertEqual(answer["pid"], 4242)

    def test_notASocket(self) -> None:
        """
        A file that is not a socket at the path is left alone and the
        server refuses to start.
        """
        path = os.path.join(shortDirectory(self), "control")
        with open(path, "w") as f:
            f.write("precious")
        server = control.ControlServer(self.supervisor, path, reactor=theReactor())
        e = self.assertRaises(ControlSocketError, server.privilegedStartService)
        self.assertIn("is not a socket", str(e))
        with open(path) as f:
            self.assertEqual(f.read(), "precious")

    async def test_stopRemovesSocket(self) -> None:
        """
        Stopping the server closes open connections and removes the
        socket; a client then hears that keepalive is not running.
        """
        proto = await control.connect(self.path, theReactor())
        lost: defer.Deferred[None] = defer.Deferred()
        proto.connectionLost = lambda reason: lost.callback(None)
        await self.server.stopService()
        await lost
        self.assertFalse(os.path.exists(self.path))
        e = await self.assertFailure(self.call(control.Ping), KeepaliveNotRunning)
        self.assertEqual(
            str(e), f"keepalive is not running (no control socket at {self.path})"
        )


ControlSocketError = control.ControlSocketError


class ClientTests(TestCase):
    """
    The client's errors when there is no keepalive to talk to.
    """

    async def test_noSocket(self) -> None:
        """
        No socket at the path: L{KeepaliveNotRunning} says so.
        """
        path = os.path.join(shortDirectory(self), "control")
        e = await self.assertFailure(
            control.call(path, control.Ping, theReactor()), KeepaliveNotRunning
        )
        self.assertEqual(str(e), f"keepalive is not running (no control socket at {path})")

    async def test_refused(self) -> None:
        """
        A socket nobody listens on: L{KeepaliveNotRunning} says the
        connection was refused.
        """
        path = os.path.join(shortDirectory(self), "control")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        e = await self.assertFailure(control.connect(path, theReactor()), KeepaliveNotRunning)
        self.assertEqual(str(e), f"keepalive is not running (connection refused at {path})")

    async def test_pathTooLong(self) -> None:
        """
        A path too long for a UNIX socket fails at once with a clear
        message (Twisted alone would wait for its connect timeout).
        """
        path = "/" + "x" * 200
        e = await self.assertFailure(control.connect(path, theReactor()), KeepaliveError)
        self.assertIn("at most 107 bytes", str(e))
