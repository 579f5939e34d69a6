"""
keepalive's control channel: AMP (L{twisted.protocols.amp}) over a UNIX
socket, C{/run/keepalive/keepalivecfg} by default, mode 0600.

C{spawndaemon} (L{sysmon.keepalive.cli}) sends one command per
connection:

  - L{Ping}: is keepalive running; its pid, start time, table, socket and
    number of processes.
  - L{Register}: register the process (or group) of a config file and
    start it.
  - L{Adopt}: register a process that is already running, by pid.
  - L{Unregister}: forget entries chosen by path (and arguments), pid,
    group or slot; with C{kill} also stop them.
  - L{Quit}: stop keepalive for good; it answers first, then stops.

Every command either answers or fails with one of the exception classes of
L{sysmon.keepalive.errors}, which the client sees as the same class with
the same message.  Anything else that goes wrong in keepalive is logged
there and answered as C{KeepaliveError("internal error: ...")}.

Server side: L{ControlServer} (a service) listens and hands each command to
a supervisor object (L{ControlProtocol} names the interface it expects).
Client side: L{connect} and L{call}.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, endpoints, error as netError
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

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

__all__ = [
    "Adopt",
    "ControlPermissionDenied",
    "ControlProtocol",
    "ControlServer",
    "ControlSocketError",
    "DEFAULT_CONTROL",
    "Ping",
    "Quit",
    "Register",
    "Unregister",
    "call",
    "connect",
    "peerCredentials",
]

DEFAULT_CONTROL = "/run/keepalive/keepalivecfg"

# The longest error message sent back; an AMP value holds at most 65535
# bytes, and no operator needs more than this.
_MAX_MESSAGE = 4000

# sun_path is 108 bytes on Linux, with room for the terminating NUL.
_MAX_SOCKET_PATH = 107


class ControlPermissionDenied(KeepaliveNotRunning):
    """
    The control socket exists but this user may not connect to it (it is
    root's, mode 0600): keepalive may well be running.
    """


class ControlSocketError(KeepaliveError):
    """
    L{ControlServer} cannot take its socket path: another keepalive
    answers on it, or something that is not a socket is in the way.
    """


# Subclasses before their base: AMP maps a failure to the first class in
# this order that it is an instance of.
_ERRORS: dict[type[Exception], bytes] = {
    AlreadyRegistered: b"ALREADY_REGISTERED",
    BadConfig: b"BAD_CONFIG",
    BadRequest: b"BAD_REQUEST",
    NoSuchProcess: b"NO_SUCH_PROCESS",
    NotRegistered: b"NOT_REGISTERED",
    Refused: b"REFUSED",
    ControlPermissionDenied: b"PERMISSION_DENIED",
    KeepaliveNotRunning: b"NOT_RUNNING",
    ControlSocketError: b"CONTROL_SOCKET",
    KeepaliveError: b"KEEPALIVE_ERROR",
}


class Ping(amp.Command):
    """
    Is keepalive there?  Answers with its pid, its start time (wall
    clock), its table and control socket paths, and how many processes
    its table holds.
    """

    arguments: list[tuple[bytes, amp.Argument]] = []
    response = [
        (b"pid", amp.Integer()),
        (b"started", amp.Float()),
        (b"table", amp.Unicode()),
        (b"control", amp.Unicode()),
        (b"processes", amp.Integer()),
    ]
    errors = _ERRORS


class Register(amp.Command):
    """
    Register the process or group described by the config file at
    C{config} (an absolute path keepalive reads itself) and start it.
    Answers with the table slots used (one per group member).
    """

    arguments = [
        (b"config", amp.Unicode()),
        (b"errorLimit", amp.Integer(optional=True)),
        (b"matchArgs", amp.Boolean()),
        (b"downCode", amp.Integer(optional=True)),
        (b"rejectCode", amp.Integer(optional=True)),
    ]
    response = [(b"slots", amp.ListOf(amp.Integer()))]
    errors = _ERRORS


class Adopt(amp.Command):
    """
    Register the running process C{pid} as the program of the config file
    C{config}, without starting anything.  Answers with its slot.
    """

    arguments = [
        (b"config", amp.Unicode()),
        (b"pid", amp.Integer()),
        (b"matchArgs", amp.Boolean()),
    ]
    response = [(b"slot", amp.Integer())]
    errors = _ERRORS


class Unregister(amp.Command):
    """
    Forget the entries chosen by exactly one of: C{path} (with C{args}
    when C{matchArgs}), C{pid}, C{group}, C{slot}; with C{kill} also stop
    them.  Answers with the slots removed.
    """

    arguments = [
        (b"path", amp.Unicode(optional=True)),
        (b"args", amp.ListOf(amp.Unicode(), optional=True)),
        (b"pid", amp.Integer(optional=True)),
        (b"group", amp.Unicode(optional=True)),
        (b"slot", amp.Integer(optional=True)),
        (b"kill", amp.Boolean()),
        (b"matchArgs", amp.Boolean()),
    ]
    response = [(b"slots", amp.ListOf(amp.Integer()))]
    errors = _ERRORS


class Quit(amp.Command):
    """
    Stop keepalive for good: it stops the processes it started, clears its
    table, answers with the slots of the processes it stopped, then exits.
    """

    arguments: list[tuple[bytes, amp.Argument]] = []
    response = [(b"stopped", amp.ListOf(amp.Integer()))]
    errors = _ERRORS


def peerCredentials(transport: Any) -> tuple[int, int, int] | None:
    """
    The credentials of the process at the other end of a UNIX socket
    connection (C{SO_PEERCRED}).

    @param transport: the connection's transport.
    @return: C{(pid, uid, gid)}, or L{None} when the transport has no UNIX
        socket to ask.
    """
    try:
        handle = transport.getHandle()
        raw = handle.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
    except (AttributeError, OSError):
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _bounded(message: str) -> str:
    if len(message) > _MAX_MESSAGE:
        return message[: _MAX_MESSAGE - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return message


def _slots(value: Any) -> list[int]:
    return [int(slot) for slot in value]


class ControlProtocol(amp.AMP):
    """
    One control connection: each command is logged with the peer's
    credentials and handed to the supervisor.

    The supervisor object provides::

        register(configPath, *, errorLimit, matchArgs, downCode, rejectCode)
            -> Deferred[list[int]]
        adopt(configPath, pid, *, matchArgs) -> Deferred[int]
        unregister(*, path, args, pid, group, slot, kill, matchArgs)
            -> Deferred[list[int]]     # args: a tuple of str, or None
        quit() -> Deferred[list[int]]
        terminate()          # called after the answer to Quit is written
        info() -> dict(pid=int, started=float, table=str, control=str,
                       processes=int)

    (any of them may also return a plain value or raise).

    @ivar supervisor: the supervisor object.
    @ivar peer: C{(pid, uid, gid)} of the client, or L{None} if unknown.
    """

    log = Logger()

    def __init__(self, supervisor: Any, reactor: Any) -> None:
        super().__init__()
        self.supervisor = supervisor
        self._reactor = reactor
        self.peer: tuple[int, int, int] | None = None
        # Fires (and becomes None) when the connection is lost.
        self.lost: defer.Deferred[None] | None = defer.Deferred()

    def makeConnection(self, transport: Any) -> None:
        # AMP logs every connection and its end at info level, naming a
        # UNIX peer as "None"; each command is logged with the caller's
        # uid and pid instead.
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.peer = peerCredentials(self.transport)

    def connectionLost(self, reason: Failure) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
        lost, self.lost = self.lost, None
        if lost is not None:
            lost.callback(None)

    def _run(
        self,
        command: str,
        request: dict[str, Any],
        call: Callable[[], Any],
        shape: Callable[[Any], dict[str, Any]],
    ) -> defer.Deferred[dict[str, Any]]:
        """
        Log C{command}, run C{call}, shape its result into the response,
        and turn any failure that is not a L{KeepaliveError} into a logged
        internal error.
        """
        pid, uid, gid = self.peer if self.peer is not None else (None, None, None)
        self.log.info(
            "control command {command} {request!r} from uid {uid} pid {peerPid}",
            command=command,
            request=request,
            uid=uid,
            gid=gid,
            peerPid=pid,
        )
        d = defer.maybeDeferred(call)
        d.addCallback(shape)
        d.addErrback(self._mapFailure, command, uid, pid)
        return d

    def _mapFailure(
        self, failure: Failure, command: str, uid: int | None, pid: int | None
    ) -> Failure:
        if failure.check(KeepaliveError):
            value = failure.value
            message = str(value)
            self.log.info(
                "control command {command} from uid {uid} pid {peerPid} refused: "
                "{message}",
                command=command,
                uid=uid,
                peerPid=pid,
                message=message,
            )
            if len(message) > _MAX_MESSAGE:
                try:
                    shorter = type(value)(_bounded(message))
                except TypeError:
                    shorter = KeepaliveError(_bounded(message))
                return Failure(shorter)
            return failure
        self.log.failure(
            "control command {command} from uid {uid} pid {peerPid} failed",
            failure,
            command=command,
            uid=uid,
            peerPid=pid,
        )
        described = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        return Failure(KeepaliveError(_bounded(f"internal error: {described}")))

    @Ping.responder
    def ping(self) -> defer.Deferred[dict[str, Any]]:
        def shape(info: dict[str, Any]) -> dict[str, Any]:
            return {
                "pid": int(info["pid"]),
                "started": float(info["started"]),
                "table": str(info["table"]),
                "control": str(info["control"]),
                "processes": int(info["processes"]),
            }

        return self._run("ping", {}, self.supervisor.info, shape)

    @Register.responder
    def register(
        self,
        config: str,
        errorLimit: int | None,
        matchArgs: bool,
        downCode: int | None,
        rejectCode: int | None,
    ) -> defer.Deferred[dict[str, Any]]:
        request = dict(
            config=config,
            errorLimit=errorLimit,
            matchArgs=matchArgs,
            downCode=downCode,
            rejectCode=rejectCode,
        )
        return self._run(
            "register",
            request,
            lambda: self.supervisor.register(
                config,
                errorLimit=errorLimit,
                matchArgs=matchArgs,
                downCode=downCode,
                rejectCode=rejectCode,
            ),
            lambda slots: {"slots": _slots(slots)},
        )

    @Adopt.responder
    def adopt(self, config: str, pid: int, matchArgs: bool) -> defer.Deferred[dict[str, Any]]:
        return self._run(
            "adopt",
            dict(config=config, pid=pid, matchArgs=matchArgs),
            lambda: self.supervisor.adopt(config, pid, matchArgs=matchArgs),
            lambda slot: {"slot": int(slot)},
        )

    @Unregister.responder
    def unregister(
        self,
        path: str | None,
        args: list[str] | None,
        pid: int | None,
        group: str | None,
        slot: int | None,
        kill: bool,
        matchArgs: bool,
    ) -> defer.Deferred[dict[str, Any]]:
        request = dict(
            path=path, args=args, pid=pid, group=group, slot=slot, kill=kill,
            matchArgs=matchArgs,
        )
        return self._run(
            "unregister",
            request,
            lambda: self.supervisor.unregister(
                path=path,
                args=None if args is None else tuple(args),
                pid=pid,
                group=group,
                slot=slot,
                kill=kill,
                matchArgs=matchArgs,
            ),
            lambda slots: {"slots": _slots(slots)},
        )

    @Quit.responder
    def quit(self) -> defer.Deferred[dict[str, Any]]:
        def shape(stopped: Any) -> dict[str, Any]:
            response = {"stopped": _slots(stopped)}
            # The answer is written when this chain returns; terminate on
            # a later turn of the reactor.
            self._reactor.callLater(0, self._terminate)
            return response

        return self._run("quit", {}, self.supervisor.quit, shape)

    def _terminate(self) -> None:
        self.log.info("keepalive stops: spawndaemon -Q")
        d = defer.maybeDeferred(self.supervisor.terminate)
        d.addErrback(lambda f: self.log.failure("stopping keepalive failed", f))


class _ControlFactory(ServerFactory):
    """
    Builds L{ControlProtocol}s and keeps the connected ones so the server
    can close them when it stops.
    """

    noisy = False

    def __init__(self, supervisor: Any, reactor: Any) -> None:
        self.supervisor = supervisor
        self.reactor = reactor
        self.connections: set[ControlProtocol] = set()

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        proto = ControlProtocol(self.supervisor, self.reactor)
        proto.factory = self
        self.connections.add(proto)
        proto.lost.addCallback(lambda _: self.connections.discard(proto))
        return proto


def _clearStale(path: str) -> None:
    """
    Remove a control socket left behind by a keepalive that is gone.

    @raise ControlSocketError: something answers on C{path} (another
        keepalive), or C{path} is not a socket, or it cannot be checked.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(f"{path} exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # Nothing listens: a socket left by a keepalive that died.
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    except BlockingIOError:
        # Its listen queue is full: it is alive, just busy.
        pass
    except OSError as e:
        raise ControlSocketError(f"cannot check the control socket {path}: {e.strerror}")
    finally:
        probe.close()
    raise ControlSocketError(f"another keepalive is running on {path}")


class ControlServer(service.Service):
    """
    Listens on the control socket and answers C{spawndaemon}.

    The socket is made in L{privilegedStartService} (before twistd drops
    privileges): the parent directory is created (0755) when missing, a
    socket left by a dead keepalive is removed, and the new one is mode
    0600.  L{stopService} closes the connections and removes the socket.

    @ivar supervisor: the supervisor the commands go to (see
        L{ControlProtocol}).
    @ivar path: the socket's path.
    @ivar port: the listening port while running, else L{None}.
    """

    log = Logger()

    def __init__(self, supervisor: Any, path: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.supervisor = supervisor
        self.path = os.path.abspath(path)
        self._reactor = reactor
        self.factory = _ControlFactory(supervisor, reactor)
        self.port: Any = None
        self._inode: tuple[int, int] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        if self.port is None:
            self._listen()
        super().startService()

    def _listen(self) -> None:
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755, exist_ok=True)
            os.chmod(parent, 0o755)
        _clearStale(self.path)
        self.port = self._reactor.listenUNIX(
            self.path, self.factory, mode=0o600, wantPID=False
        )
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self.log.info("control socket listening on {path}", path=self.path)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        waits: list[defer.Deferred[Any]] = []
        if port is not None:
            waits.append(defer.maybeDeferred(port.stopListening))
        for proto in list(self.factory.connections):
            if proto.lost is not None:
                waits.append(proto.lost)
                # Writes what is buffered (the answer to Quit) first.
                proto.transport.loseConnection()
        d = defer.DeferredList(waits, consumeErrors=True)
        d.addCallback(lambda _: self._removeSocket())
        return d

    def _removeSocket(self) -> None:
        # The port removes it; make sure, but never remove another
        # keepalive's socket that has taken the path since.
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            os.unlink(self.path)


def connect(path: str, reactor: Any = None) -> defer.Deferred[amp.AMP]:
    """
    Connect to keepalive's control socket.

    @param path: the control socket's path.
    @return: a L{Deferred} that fires with the connected L{amp.AMP}, or
        fails with L{KeepaliveNotRunning} (no socket, or nothing listening
        on it), L{ControlPermissionDenied} (this user may not connect), or
        L{KeepaliveError} for any other reason, each naming C{path}.
    """
    if reactor is None:
        from twisted.internet import reactor
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        # Twisted would only notice at its connect timeout.
        return defer.fail(
            KeepaliveError(
                f"cannot connect to keepalive at {path}: a UNIX socket path holds "
                f"at most {_MAX_SOCKET_PATH} bytes"
            )
        )
    endpoint = endpoints.UNIXClientEndpoint(reactor, path, timeout=10)
    d = endpoints.connectProtocol(endpoint, amp.AMP())

    def failed(failure: Failure) -> Failure:
        if not failure.check(netError.ConnectError):
            return Failure(
                KeepaliveError(
                    f"cannot connect to keepalive at {path}: {failure.getErrorMessage()}"
                )
            )
        code = failure.value.osError
        if code == errno.ENOENT:
            return Failure(
                KeepaliveNotRunning(
                    f"keepalive is not running (no control socket at {path})"
                )
            )
        if code == errno.ECONNREFUSED or failure.check(netError.ConnectionRefusedError):
            return Failure(
                KeepaliveNotRunning(
                    f"keepalive is not running (connection refused at {path})"
                )
            )
        if code in (errno.EACCES, errno.EPERM):
            return Failure(
                ControlPermissionDenied(
                    f"cannot reach keepalive (permission denied on {path}; "
                    "run spawndaemon as root)"
                )
            )
        reason = os.strerror(code) if isinstance(code, int) else failure.getErrorMessage()
        return Failure(KeepaliveError(f"cannot connect to keepalive at {path}: {reason}"))

    d.addErrback(failed)
    return d


def call(
    path: str, command: type[amp.Command], reactor: Any = None, /, **kw: Any
) -> defer.Deferred[dict[str, Any]]:
    """
    Connect, send one command, close the connection.

    @param path: the control socket's path.
    @param command: the command class (L{Ping}, L{Register}, ...).
    @param kw: the command's arguments (C{path} and C{command} are
        positional-only here, so L{Unregister}'s C{path} goes in C{kw}).
    @return: a L{Deferred} that fires with the answer (a C{dict}), or fails
        with a L{KeepaliveError} (subclass): keepalive's own error, one of
        L{connect}'s, or one saying that the connection broke or that
        keepalive did not understand the command.
    """
    if reactor is None:
        from twisted.internet import reactor

    async def run() -> dict[str, Any]:
        proto = await connect(path, reactor)
        try:
            return await proto.callRemote(command, **kw)
        except KeepaliveError:
            raise
        except netError.ConnectionClosed:
            raise KeepaliveError(
                f"keepalive closed the control connection before answering ({path})"
            )
        except (amp.RemoteAmpError, amp.UnhandledCommand) as e:
            name = command.__name__
            raise KeepaliveError(f"keepalive could not answer {name}: {e}")
        finally:
            proto.transport.loseConnection()

    return defer.Deferred.fromCoroutine(run())
