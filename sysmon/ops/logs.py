"""
Log observers for operations: the systemd journal (its native protocol),
syslog, and a JSON-lines file that log rotation may move away.

All three take L{twisted.logger} events, so the named fields a daemon logs
(C{log.info("SM_MON for {name}", name=peer)}) reach the journal as fields
of their own (C{SYSMON_NAME=...}) that C{journalctl SYSMON_NAME=...} can
select, and reach the JSON file intact.

Used two ways:

  - by the tac's C{[log]} section: L{observers} (C{journal = yes|no|auto},
    C{syslog}, C{json = FILE}, C{level});
  - by C{twistd --logger} for a daemon run alone:
    C{twistd --logger sysmon.ops.logs.journal netdump ...} or
    C{--logger sysmon.ops.logs.json} (L{journal}, L{json}; they take no
    arguments, so they read the environment: C{$SYSMON_JOURNAL_SOCKET},
    C{$SYSMON_JSON_LOG}, C{$SYSMON_LOG_IDENTIFIER}, C{$SYSMON_LOG_LEVEL}).

The journal protocol (C{sd_journal_sendv}, "native protocol"): one
C{AF_UNIX} datagram per entry, each field C{KEY=value\\n}, or, for a value
with a newline in it, C{KEY\\n}, the value's length as a little-endian
64-bit integer, the value, C{\\n}.  An entry too big for one datagram
(C{EMSGSIZE}, or C{ENOBUFS}) is written to a memfd, sealed against any
change (C{F_SEAL_SHRINK}, C{F_SEAL_GROW}, C{F_SEAL_WRITE}, C{F_SEAL_SEAL})
and the descriptor passed in an empty datagram (C{SCM_RIGHTS}), as
libsystemd does; journald reads it from there.  Nothing is truncated.

The observers never raise and the journal one never blocks: its socket is
non-blocking, and an entry the journal cannot take now (gone, not
running, queue full) is dropped.  Such trouble is written to this
process's original standard error at most once a minute (never through
the logging system, which would loop), and the journal gets one warning
with the number of entries lost once it answers again.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import socket
import struct
import sys
import syslog as _syslog
import threading
import time
from typing import IO, Any, Callable, Iterable, Mapping

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    eventAsText,
    jsonFileLogObserver,
)
from zope.interface import implementer

__all__ = [
    "DEFAULT_JOURNAL_SOCKET",
    "JSONFileObserver",
    "JournalObserver",
    "SyslogObserver",
    "PRIORITIES",
    "encodeJournal",
    "fieldName",
    "journal",
    "journalFields",
    "journalObserver",
    "journalSocketPath",
    "json",
    "jsonFileObserver",
    "observers",
    "syslogObserver",
    "wantJournal",
]

#: Where journald listens for native-protocol datagrams.
DEFAULT_JOURNAL_SOCKET = "/run/systemd/journal/socket"

#: log_level -> syslog priority (the journal's PRIORITY is the same number).
PRIORITIES: Mapping[LogLevel, int] = {
    LogLevel.debug: _syslog.LOG_DEBUG,  # 7
    LogLevel.info: _syslog.LOG_INFO,  # 6
    LogLevel.warn: _syslog.LOG_WARNING,  # 4
    LogLevel.error: _syslog.LOG_ERR,  # 3
    LogLevel.critical: _syslog.LOG_CRIT,  # 2
}

#: Keys that L{twisted.python.log} puts in its (legacy) events: not fields
#: the code logged.
_LEGACY_KEYS = frozenset(
    {"message", "isError", "system", "time", "format", "why", "failure", "printed",
     "logLevel"}
)

#: Seconds between two complaints on standard error.
COMPLAIN_EVERY = 60.0

#: What the journal's send buffer is raised to (libsystemd's figure; the
#: kernel caps it at net.core.wmem_max).  Bigger entries go by memfd.
SEND_BUFFER = 8 * 1024 * 1024

_FIELD_NAME = re.compile(r"[^A-Z0-9_]")
_MAX_FIELD_NAME = 64
_LE64 = struct.Struct("<Q")
#: A memfd's seals: journald takes it only once it can no longer change.
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


# -- the journal's native protocol: pure ------------------------------------------


def _text(event: LogEvent) -> str:
    """
    The event as one message: L{formatEvent}'s text, and the traceback
    of its failure, if any.  Empty for an event with nothing to say.
    """
    return eventAsText(event, includeTraceback=True, includeTimestamp=False,
                       includeSystem=False)


def _encode(value: str) -> bytes:
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace")


def _simple(value: Any) -> str | None:
    """
    The text of a simple JSON-able value (string, integer, finite float,
    boolean as C{true}/C{false}); L{None} for anything else.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def fieldName(key: str) -> str | None:
    """
    The journal field for an event's named field C{key}: C{SYSMON_} and
    C{key} upper-cased with every character outside C{[A-Z0-9_]} made
    C{_}, cut to the journal's 64 characters.

    @return: the name, or L{None} when C{key} has no usable character.
    """
    cleaned = _FIELD_NAME.sub("_", key.upper())
    if not cleaned.strip("_"):
        return None
    return ("SYSMON_" + cleaned)[:_MAX_FIELD_NAME]


def journalFields(event: LogEvent, identifier: str = "sysmon") -> list[tuple[str, bytes]]:
    """
    The journal fields of one log event, in order: C{MESSAGE} (the
    formatted text, plus the traceback of a failure), C{PRIORITY} (from
    C{log_level}: debug 7, info 6, warn 4, error 3, critical 2; 6 when it
    has none), C{SYSLOG_IDENTIFIER}, C{CODE_NAMESPACE} (C{log_namespace}),
    then each of the event's own named fields whose value is simple
    (string, number, boolean) as C{SYSMON_<NAME>} (see L{fieldName}).

    @return: C{(name, value)} pairs; empty for an event with no text.
    """
    text = _text(event)
    if not text:
        return []
    level = event.get("log_level")
    priority = PRIORITIES.get(level, _syslog.LOG_INFO) if level is not None \
        else _syslog.LOG_INFO
    fields = [
        ("MESSAGE", _encode(text)),
        ("PRIORITY", str(priority).encode()),
        ("SYSLOG_IDENTIFIER", _encode(identifier)),
    ]
    namespace = event.get("log_namespace")
    if isinstance(namespace, str) and namespace:
        fields.append(("CODE_NAMESPACE", _encode(namespace)))
    legacy = "isError" in event and "message" in event
    for key, value in event.items():
        if not isinstance(key, str) or key.startswith("log_"):
            continue
        if legacy and key in _LEGACY_KEYS:
            continue
        text = _simple(value)
        if text is None:
            continue
        name = fieldName(key)
        if name is not None:
            fields.append((name, _encode(text)))
    return fields


def encodeJournal(fields: Iterable[tuple[str, bytes]]) -> bytes:
    """
    One journal entry in the native protocol: C{NAME=value\\n}, or
    C{NAME\\n<le64 length>value\\n} for a value with a newline in it.
    """
    parts: list[bytes] = []
    for name, value in fields:
        key = name.encode("ascii")
        if b"\n" in value:
            parts += [key, b"\n", _LE64.pack(len(value)), value, b"\n"]
        else:
            parts += [key, b"=", value, b"\n"]
    return b"".join(parts)


# -- complaints ----------------------------------------------------------------------


class _Complaints:
    """
    Says what went wrong on the process's original standard error, at most
    once per L{COMPLAIN_EVERY} seconds, with the number of events lost
    meanwhile.
    """

    def __init__(self, what: str, now: Callable[[], float], stderr: IO[str] | None) -> None:
        self.what = what
        self.now = now
        self.stderr = stderr if stderr is not None else sys.__stderr__
        self.last: float | None = None
        self.dropped = 0

    def __call__(self, why: str, lost: bool = True) -> None:
        """
        Complain about C{why}, if the last complaint is old enough.

        @param lost: an event was lost (counted for the next complaint).
        """
        self.dropped += lost
        now = self.now()
        if self.last is not None and now - self.last < COMPLAIN_EVERY:
            return
        self.last = now
        lost, self.dropped = self.dropped, 0
        line = (f"sysmon.ops.logs: {self.what}: {why}; {lost} log event(s) lost since "
                f"the last such message (the next in {COMPLAIN_EVERY:.0f} s at the "
                f"earliest)\n")
        try:
            if self.stderr is not None:
                self.stderr.write(line)
                self.stderr.flush()
        except Exception:
            pass


# -- the journal ---------------------------------------------------------------------


def journalSocketPath(environ: Mapping[str, str] = os.environ) -> str:
    """
    The journal socket: C{$SYSMON_JOURNAL_SOCKET} (for tests, or a journal
    somewhere else), else L{DEFAULT_JOURNAL_SOCKET}.
    """
    return environ.get("SYSMON_JOURNAL_SOCKET") or DEFAULT_JOURNAL_SOCKET


@implementer(ILogObserver)
class JournalObserver:
    """
    Sends each event to the journal, in its native protocol.

    @ivar path: the journal's socket.
    @ivar identifier: C{SYSLOG_IDENTIFIER} of every entry.
    @ivar sent: entries sent.
    @ivar dropped: entries the journal did not take.
    @ivar viaMemfd: entries sent as a memfd (too big for a datagram).
    """

    def __init__(self, path: str = DEFAULT_JOURNAL_SOCKET, identifier: str = "sysmon", *,
                 now: Callable[[], float] = time.monotonic,
                 stderr: IO[str] | None = None) -> None:
        """
        @param now: a monotonic clock, for the rate of complaints.
        @param stderr: where complaints go (the process's original
            standard error by default).
        """
        self.path = path
        self.identifier = identifier
        self.sent = 0
        self.dropped = 0
        self.viaMemfd = 0
        self._lostSinceSent = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._complain = _Complaints(f"cannot send to the journal at {path}", now, stderr)

    def __call__(self, event: LogEvent) -> None:
        try:
            fields = journalFields(event, self.identifier)
            if not fields:
                return
            data = encodeJournal(fields)
        except Exception as e:  # an event nothing can format: say so, go on
            data = encodeJournal([("MESSAGE", _encode(f"unloggable event: {e!r}")),
                                  ("PRIORITY", b"3"),
                                  ("SYSLOG_IDENTIFIER", _encode(self.identifier))])
        with self._lock:
            self._emit(data)

    def _emit(self, data: bytes) -> None:
        why = self._send(data)
        if why is not None:
            self.dropped += 1
            self._lostSinceSent += 1
            self._complain(why)
            return
        self.sent += 1
        if self._lostSinceSent:
            lost, self._lostSinceSent = self._lostSinceSent, 0
            note = encodeJournal([
                ("MESSAGE", f"{lost} log event(s) could not be sent to the journal "
                            f"and were lost".encode()),
                ("PRIORITY", b"4"),
                ("SYSLOG_IDENTIFIER", _encode(self.identifier)),
                ("CODE_NAMESPACE", __name__.encode()),
                ("SYSMON_LOST", str(lost).encode()),
            ])
            self._send(note)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:
                pass
            self._sock = sock
        return self._sock

    def _send(self, data: bytes) -> str | None:
        """
        Send one entry: a datagram, else a memfd.

        @return: L{None} when sent, else why not.
        """
        try:
            sock = self._socket()
            try:
                sock.sendto(data, self.path)
                return None
            except OSError as e:
                if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
            self._sendMemfd(sock, data)
            self.viaMemfd += 1
            return None
        except OSError as e:
            return e.strerror or str(e)
        except Exception as e:
            return repr(e)

    def _sendMemfd(self, sock: socket.socket, data: bytes) -> None:
        fd = os.memfd_create("sysmon-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            # (socket.send_fds ignores its address argument before Python 3.13.)
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
                         0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        """
        Close the socket (a later event opens a new one).
        """
        with self._lock:
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()


def journalObserver(path: str = DEFAULT_JOURNAL_SOCKET,
                    identifier: str = "sysmon") -> JournalObserver:
    """
    An observer that sends every event to the systemd journal listening
    at C{path}, as L{JournalObserver} describes.
    """
    return JournalObserver(path, identifier)


# -- syslog ----------------------------------------------------------------------------


def _facility(name: str) -> int:
    value = getattr(_syslog, "LOG_" + name.upper(), None)
    names = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
             "cron", "authpriv", "ftp", *(f"local{i}" for i in range(8)))
    if name.lower() not in names or not isinstance(value, int):
        raise ValueError(f"{name!r} is not a syslog facility ({', '.join(names)})")
    return value


@implementer(ILogObserver)
class SyslogObserver:
    """
    Sends each event to syslog with the stdlib C{syslog} module (libc's
    C{syslog(3)}, to C{/dev/log}), one call per line of text, each line
    C{[namespace] text}.
    """

    def __init__(self, identifier: str = "sysmon", facility: str = "daemon") -> None:
        self.identifier = identifier
        self.facility = _facility(facility)
        _syslog.openlog(identifier, _syslog.LOG_PID, self.facility)

    def __call__(self, event: LogEvent) -> None:
        try:
            text = _text(event)
            if not text:
                return
            level = event.get("log_level")
            priority = PRIORITIES.get(level, _syslog.LOG_INFO) if level is not None \
                else _syslog.LOG_INFO
            namespace = event.get("log_namespace") or "-"
            for line in text.split("\n"):
                _syslog.syslog(priority | self.facility, f"[{namespace}] {line}")
        except Exception:
            pass


def syslogObserver(identifier: str = "sysmon", facility: str = "daemon") -> SyslogObserver:
    """
    An observer that sends every event to syslog with C{identifier} (and
    the pid) and C{facility} (C{daemon}, C{local0} ... C{local7} ...), the
    priority from the event's level (debug C{LOG_DEBUG}, info C{LOG_INFO},
    warn C{LOG_WARNING}, error C{LOG_ERR}, critical C{LOG_CRIT}).  A
    multi-line message (a traceback) is sent line by line, as syslog
    daemons expect.  twistd has its own C{--syslog} (with C{--prefix}),
    which puts everything at C{LOG_INFO} except failures (C{LOG_ALERT}).

    @raise ValueError: an unknown facility.
    """
    return SyslogObserver(identifier, facility)


# -- JSON lines ------------------------------------------------------------------------


@implementer(ILogObserver)
class JSONFileObserver:
    """
    Appends each event to a file as one line of JSON
    (L{twisted.logger.eventAsJSON}), with no record separator: a plain
    JSON-lines file that C{jq} and log shippers read, and that
    L{twisted.logger.eventsFromJSONLogFile} reads back (it takes the lines
    apart on newlines when the file does not start with C{\\x1e}).

    The file is created mode 0640, opened C{O_APPEND}, and reopened at
    the first event after it was moved away or deleted (its inode is
    compared with the path's at each event), so logrotate's default
    C{create} mode needs no signal; C{copytruncate} works too.

    @ivar path: the file.
    @ivar written: events written.
    """

    MODE = 0o640

    def __init__(self, path: str, *, now: Callable[[], float] = time.monotonic,
                 stderr: IO[str] | None = None) -> None:
        """
        @raise OSError: the file cannot be opened (at start, that is an
            error to report; later, the old file is kept).
        """
        self.path = path
        self.written = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._complain = _Complaints(f"cannot write the log file {path}", now, stderr)
        self._fd, self._identity = self._open()

    def _open(self) -> tuple[int, tuple[int, int]]:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.MODE)
        except FileExistsError:
            fd = os.open(self.path, flags)
        else:
            os.fchmod(fd, self.MODE)  # whatever the umask
        st = os.fstat(fd)
        return fd, (st.st_dev, st.st_ino)

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self._identity

    def __call__(self, event: LogEvent) -> None:
        try:
            line = (eventAsJSON(event) + "\n").encode("utf-8", "backslashreplace")
        except Exception as e:
            line = (eventAsJSON({"log_format": "unloggable event: {error}",
                                 "error": repr(e), "log_level": LogLevel.error,
                                 "log_namespace": __name__, "log_time": time.time()})
                    + "\n").encode("utf-8")
        with self._lock:
            try:
                if self._fd is None or self._moved():
                    self._reopen()
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
                self.written += 1
            except Exception as e:
                self.dropped += 1
                self._complain(getattr(e, "strerror", None) or repr(e))

    def _reopen(self) -> None:
        try:
            fd, identity = self._open()
        except OSError as e:
            if self._fd is None:
                raise
            # Keep writing to the old file, and say so.
            self._complain(f"cannot reopen it ({e.strerror}); still writing to the old file",
                           lost=False)
            return
        old, self._fd, self._identity = self._fd, fd, identity
        if old is not None:
            os.close(old)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)


def jsonFileObserver(path: str) -> JSONFileObserver:
    """
    An observer appending every event to C{path} as JSON lines, reopening
    the file after log rotation moved it: see L{JSONFileObserver}.

    @raise OSError: C{path} cannot be opened for appending.
    """
    return JSONFileObserver(path)


@implementer(ILogObserver)
class _Guarded:
    """
    An observer that never raises (a closed stdout must not stop a daemon).
    """

    def __init__(self, observer: ILogObserver, what: str) -> None:
        self.observer = observer
        self._complain = _Complaints(what, time.monotonic, None)

    def __call__(self, event: LogEvent) -> None:
        try:
            self.observer(event)
        except Exception as e:
            self._complain(getattr(e, "strerror", None) or repr(e))


# -- choosing ------------------------------------------------------------------------


def _level(level: LogLevel | str) -> LogLevel:
    if isinstance(level, str):
        name = level.strip().lower()
        name = {"warning": "warn", "err": "error", "crit": "critical"}.get(name, name)
        try:
            return LogLevel.levelWithName(name)
        except Exception:
            raise ValueError(f"{level!r} is not a log level (debug, info, warn, error, "
                             "critical)")
    return level


def _filtered(observer: ILogObserver, level: LogLevel | str) -> ILogObserver:
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(_level(level))])


def wantJournal(journal: str, environ: Mapping[str, str] = os.environ) -> bool:
    """
    Whether C{journal} (C{"yes"}, C{"no"}, C{"auto"}) means logging to the
    journal: C{auto} does when systemd started us with a journal
    (C{$JOURNAL_STREAM} is set) or the journal's socket exists.

    @raise ValueError: another value.
    """
    value = str(journal).strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    if value == "auto":
        return bool(environ.get("JOURNAL_STREAM")) or os.path.exists(
            journalSocketPath(environ))
    raise ValueError(f"journal = {journal!r}: give yes, no or auto")


def observers(journal: str = "auto", syslog: bool = False, json: str | None = None,
              level: LogLevel | str = LogLevel.info, *,
              identifier: str = "sysmon",
              environ: Mapping[str, str] = os.environ) -> list[ILogObserver]:
    """
    The observers of the tac's C{[log]} section, each behind a
    L{FilteringLogObserver} that lets through C{level} and above.  An
    empty list when nothing is asked for (twistd's own log stays the only
    one).  To give twistd a single observer, wrap them in a
    L{twisted.logger.LogPublisher}.

    @param journal: C{"yes"}, C{"no"}, or C{"auto"} (see L{wantJournal});
        the socket is C{$SYSMON_JOURNAL_SOCKET} or the system journal's.
    @param syslog: also to syslog (facility daemon).
    @param json: a file to append JSON lines to (see L{JSONFileObserver}).
    @param level: the lowest level that passes (a L{LogLevel}, or its name).
    @raise ValueError: a bad C{journal} or C{level}.
    @raise OSError: the JSON file cannot be opened.
    """
    chosen: list[ILogObserver] = []
    useJournal = wantJournal(journal, environ)
    _level(level)
    if useJournal:
        chosen.append(JournalObserver(journalSocketPath(environ), identifier))
    if syslog:
        chosen.append(SyslogObserver(identifier))
    if json:
        chosen.append(JSONFileObserver(json))
    return [_filtered(o, level) for o in chosen]


# -- twistd --logger factories ---------------------------------------------------


def journal() -> ILogObserver:
    """
    For C{twistd --logger sysmon.ops.logs.journal}: the journal at
    C{$SYSMON_JOURNAL_SOCKET} (default L{DEFAULT_JOURNAL_SOCKET}), with
    C{SYSLOG_IDENTIFIER=$SYSMON_LOG_IDENTIFIER} (default C{sysmon}),
    events of C{$SYSMON_LOG_LEVEL} and above (default: all, as twistd's own
    log file).
    """
    environ = os.environ
    observer = JournalObserver(journalSocketPath(environ),
                               environ.get("SYSMON_LOG_IDENTIFIER") or "sysmon")
    return _filtered(observer, environ.get("SYSMON_LOG_LEVEL") or LogLevel.debug)


def json() -> ILogObserver:
    """
    For C{twistd --logger sysmon.ops.logs.json}: JSON lines appended to
    C{$SYSMON_JSON_LOG} (reopened after rotation), or written to standard
    output when it is unset (a container's log collector); events of
    C{$SYSMON_LOG_LEVEL} and above (default: all).
    """
    environ = os.environ
    path = environ.get("SYSMON_JSON_LOG")
    observer: ILogObserver
    if path:
        observer = JSONFileObserver(path)
    else:
        # Taken now: twistd replaces sys.stdout with the log once logging began.
        observer = _Guarded(jsonFileLogObserver(sys.stdout, recordSeparator=""),
                            "cannot write JSON log lines to standard output")
    return _filtered(observer, environ.get("SYSMON_LOG_LEVEL") or LogLevel.debug)
