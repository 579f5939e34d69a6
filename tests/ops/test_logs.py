"""
Tests for L{sysmon.ops.logs}: the journal observer against a real
C{AF_UNIX} datagram socket the test binds (and, where it can run, a real
C{systemd-journald}), the JSON-lines file with log rotation, syslog with
the stdlib module patched, the C{[log]} section's choice, and a real
C{twistd --logger sysmon.ops.logs.journal netdump} child.
"""

from __future__ import annotations

import fcntl
import io
import json as jsonlib
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import syslog
import tempfile
import time
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    eventAsText,
    eventsFromJSONLogFile,
    formatEvent,
)
from twisted.python import log as legacyLog
from twisted.trial.unittest import SynchronousTestCase

from sysmon.ops import logs
from sysmon.testing import stopProcess

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: A journal field name as journald accepts it from a client.
_NAME_OK = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def parseEntry(data: bytes) -> list[tuple[str, bytes]]:
    """
    Take one native-protocol journal entry apart as journald does: lines
    of C{NAME=value}, or C{NAME}, a little-endian 64-bit length, that many
    bytes and a newline.  Checks each name as journald would.
    """
    fields = []
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        eq = data.find(b"=", i, nl)
        if eq != -1:
            name, value, i = data[i:eq], data[eq + 1:nl], nl + 1
        else:
            name = data[i:nl]
            (length,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + length]
            if len(value) != length or data[nl + 9 + length:nl + 10 + length] != b"\n":
                raise ValueError(f"bad binary field {name!r}")
            i = nl + 10 + length
        text = name.decode("ascii")
        if (not text or len(text) > 64 or text[0] == "_" or text[0].isdigit()
                or not set(text) <= _NAME_OK):
            raise ValueError(f"journald refuses the field name {text!r}")
        fields.append((text, value))
    return fields


class FakeJournal:
    """
    A journal socket: a real C{AF_UNIX} datagram socket bound in a short
    temporary directory (socket paths are limited to 107 bytes).

    @ivar memfds: the seals of each memfd received.
    """

    def __init__(self, case: SynchronousTestCase, name: str = "journal") -> None:
        self.dir = tempfile.mkdtemp(prefix="sjl")
        case.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, name)
        self.sock: socket.socket | None = None
        self.memfds: list[int] = []
        self.bind()
        case.addCleanup(self.close)

    def bind(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def receive(self, timeout: float = 10.0) -> list[tuple[str, bytes]] | None:
        """
        The next entry (read from a memfd when one was passed), or L{None}
        after C{timeout} seconds without one.
        """
        assert self.sock is not None
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 4)
        if fds:
            assert data == b"", "a datagram passing a memfd carries nothing else"
            assert len(fds) == 1
            fd = fds[0]
            try:
                self.memfds.append(fcntl.fcntl(fd, fcntl.F_GET_SEALS))
                size = os.fstat(fd).st_size
                data = os.pread(fd, size, 0)
            finally:
                os.close(fd)
        return parseEntry(data)

    def entries(self, timeout: float = 0.2) -> list[dict[str, str]]:
        """
        Every entry waiting now, as dictionaries of text.
        """
        found = []
        while (entry := self.receive(timeout)) is not None:
            found.append(asDict(entry))
        return found


def asDict(entry: list[tuple[str, bytes]]) -> dict[str, str]:
    return {name: value.decode("utf-8", "replace") for name, value in entry}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def logger(observer: Any, namespace: str = "sysmon.test") -> Logger:
    return Logger(namespace=namespace, observer=LogPublisher(observer))


def fail() -> None:
    1 / 0


class JournalFieldsTests(SynchronousTestCase):
    """
    What an event becomes in the journal: the entries a real socket
    receives, parsed back as journald parses them.
    """

    def setUp(self):
        self.journal = FakeJournal(self)
        self.stderr = io.StringIO()
        self.observer = logs.JournalObserver(self.journal.path, "sysmon-test",
                                             stderr=self.stderr)
        self.addCleanup(self.observer.close)
        self.log = logger(self.observer, "sysmon.netdump.server")

    def entry(self) -> dict[str, str]:
        received = self.journal.receive()
        self.assertIsNotNone(received, "nothing reached the journal socket")
        return asDict(received)

    def test_message(self):
        """
        An event becomes one entry: MESSAGE is the formatted text,
        PRIORITY the level's, SYSLOG_IDENTIFIER ours and CODE_NAMESPACE the
        logger's namespace.
        """
        self.log.info("dump from {client} finished: {pages} pages", client="10.0.0.7:6666",
                      pages=4096)
        entry = self.entry()
        self.assertEqual(entry["MESSAGE"], "dump from 10.0.0.7:6666 finished: 4096 pages")
        self.assertEqual(entry["PRIORITY"], "6")
        self.assertEqual(entry["SYSLOG_IDENTIFIER"], "sysmon-test")
        self.assertEqual(entry["CODE_NAMESPACE"], "sysmon.netdump.server")
        self.assertEqual(self.observer.sent, 1)
        self.assertEqual(self.stderr.getvalue(), "")

    def test_levels(self):
        """
        PRIORITY follows the level: debug 7, info 6, warn 4, error 3,
        critical 2.
        """
        for level, priority in [(LogLevel.debug, "7"), (LogLevel.info, "6"),
                                (LogLevel.warn, "4"), (LogLevel.error, "3"),
                                (LogLevel.critical, "2")]:
            self.log.emit(level, "at {name}", name=level.name)
            entry = self.entry()
            self.assertEqual((entry["MESSAGE"], entry["PRIORITY"]),
                             (f"at {level.name}", priority))

    def test_namedFields(self):
        """
        The event's own fields with simple values become SYSMON_<NAME>
        fields (numbers and booleans as JSON writes them); other values
        (None, lists, objects, NaN) are left out, and so are Twisted's
        log_ keys.
        """
        self.log.info("call", client="10.0.0.7", port=6666, ratio=0.25, secure=True,
                      nothing=None, pages=[1, 2], obj=object(), nan=float("nan"))
        entry = self.entry()
        own = {k: v for k, v in entry.items() if k.startswith("SYSMON_")}
        self.assertEqual(own, {"SYSMON_CLIENT": "10.0.0.7", "SYSMON_PORT": "6666",
                               "SYSMON_RATIO": "0.25", "SYSMON_SECURE": "true"})
        self.assertFalse([k for k in entry if k.startswith(("LOG_", "SYSMON_LOG"))])

    def test_fieldNames(self):
        """
        Field names are upper-cased and anything outside [A-Z0-9_] becomes
        _, so journald takes every one (the parser refuses what journald
        refuses); the name is cut to 64 characters.
        """
        fields = {"peer-host": "a", "dotted.key": "b", "_private": "c", "naïve": "d",
                  "x" * 80: "e", "2nd": "f"}
        self.log.info("names", **fields)
        entry = self.entry()
        self.assertEqual(entry["SYSMON_PEER_HOST"], "a")
        self.assertEqual(entry["SYSMON_DOTTED_KEY"], "b")
        self.assertEqual(entry["SYSMON__PRIVATE"], "c")
        self.assertEqual(entry["SYSMON_NA_VE"], "d")
        self.assertEqual(entry["SYSMON_" + "X" * 57], "e")
        self.assertEqual(entry["SYSMON_2ND"], "f")

    def test_multiLine(self):
        """
        A value with newlines (peer text, a multi-line message) goes in
        the binary-safe form and comes back byte for byte; so do "=" and
        NUL in a value.
        """
        text = "line one\nline two\n\nKEY=injected"
        self.log.warn("console: {text}", text=text, raw="a=b\x00c")
        received = self.journal.receive()
        entry = asDict(received)
        self.assertEqual(entry["MESSAGE"], "console: " + text)
        self.assertEqual(entry["SYSMON_TEXT"], text)
        self.assertEqual(entry["SYSMON_RAW"], "a=b\x00c")
        self.assertNotIn("KEY", entry)
        self.assertEqual([n for n, _ in received].count("MESSAGE"), 1)

    def test_failure(self):
        """
        A logged failure's traceback is part of MESSAGE, after the text.
        """
        try:
            fail()
        except ZeroDivisionError:
            self.log.failure("check {check} raised", check="load")
        entry = self.entry()
        message = entry["MESSAGE"]
        self.assertTrue(message.startswith("check load raised\nTraceback"), message)
        self.assertIn("in fail", message)
        self.assertIn("ZeroDivisionError", message)
        self.assertEqual(entry["PRIORITY"], "2")
        self.assertEqual(entry["SYSMON_CHECK"], "load")

    def test_legacyEvent(self):
        """
        An event from twisted.python.log (twistd's own, a library's) keeps
        its text, and its bookkeeping keys (message, isError, system,
        time) do not become fields; keywords it was given do.
        """
        publisher = LogPublisher(self.observer)
        legacy = legacyLog.LogPublisher(publisher, publisher)
        legacy.msg("Starting factory", "<Factory>", system="-", peer="10.0.0.9")
        entry = self.entry()
        self.assertEqual(entry["MESSAGE"], "Starting factory <Factory>")
        self.assertEqual(entry["PRIORITY"], "6")
        own = {k for k in entry if k.startswith("SYSMON_")}
        self.assertEqual(own, {"SYSMON_PEER"})

    def test_emptyEvent(self):
        """
        An event with nothing to say (no format, no failure) sends nothing.
        """
        self.observer({"log_level": LogLevel.info, "log_namespace": "x", "log_format": None})
        self.assertIsNone(self.journal.receive(0.2))
        self.assertEqual(self.observer.sent, 0)

    def test_memfd(self):
        """
        An entry too big for one datagram is passed as a memfd, sealed
        against shrinking, growing, writing and new seals, in an empty
        datagram; the entry read from it is whole.
        """
        big = "x" * (20 * 1024 * 1024)
        self.log.info("big {size}", size=len(big), blob=big)
        entry = self.entry()
        self.assertEqual(entry["MESSAGE"], f"big {len(big)}")
        self.assertEqual(len(entry["SYSMON_BLOB"]), len(big))
        self.assertEqual(self.observer.viaMemfd, 1)
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
        self.assertEqual(self.journal.memfds, [seals])
        self.log.info("small again")
        self.assertEqual(self.entry()["MESSAGE"], "small again")
        self.assertEqual(self.observer.viaMemfd, 1)


class JournalTroubleTests(SynchronousTestCase):
    """
    A journal that is gone or full costs entries, never a raise or a
    block, and is complained about once a minute on standard error.
    """

    def setUp(self):
        self.journal = FakeJournal(self)
        self.stderr = io.StringIO()
        self.clock = FakeClock()
        self.observer = logs.JournalObserver(self.journal.path, "t", now=self.clock,
                                             stderr=self.stderr)
        self.addCleanup(self.observer.close)
        self.log = logger(self.observer)

    def complaints(self) -> list[str]:
        return self.stderr.getvalue().splitlines()

    def test_gone(self):
        """
        With no journal listening, events are dropped and counted; the
        first failure is said on stderr at once, the next ones only after a
        minute, with how many were lost; when the journal is back, it gets
        the next event and a warning with the number lost.
        """
        self.journal.close()
        self.log.info("one")
        self.log.info("two")
        self.clock.now += 59
        self.log.info("three")
        self.assertEqual(len(self.complaints()), 1)
        self.assertIn(f"cannot send to the journal at {self.journal.path}",
                      self.complaints()[0])
        self.assertIn("1 log event(s) lost", self.complaints()[0])
        self.clock.now += 2
        self.log.info("four")
        self.assertEqual(len(self.complaints()), 2)
        self.assertIn("3 log event(s) lost", self.complaints()[1])
        self.assertEqual((self.observer.sent, self.observer.dropped), (0, 4))

        self.journal.bind()
        self.log.info("five")
        entries = self.journal.entries()
        self.assertEqual([e["MESSAGE"] for e in entries],
                         ["five", "4 log event(s) could not be sent to the journal and "
                                  "were lost"])
        self.assertEqual(entries[1]["PRIORITY"], "4")
        self.assertEqual(entries[1]["SYSMON_LOST"], "4")
        self.log.info("six")
        self.assertEqual([e["MESSAGE"] for e in self.journal.entries()], ["six"])

    def test_full(self):
        """
        When the journal does not read (its queue is full), sending does
        not wait: the events that do not fit are dropped (an alarm would
        interrupt a blocked send and fail the test).
        """
        class Blocked(BaseException):
            """
            Not an Exception: the observer, which swallows those, lets it
            through.
            """

        def blocked(signum, frame):
            raise Blocked("the journal observer blocked")

        previous = signal.signal(signal.SIGALRM, blocked)
        self.addCleanup(signal.signal, signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, 10)
        self.addCleanup(signal.setitimer, signal.ITIMER_REAL, 0)
        for i in range(2000):
            self.log.info("event {i} {pad}", i=i, pad="p" * 2000)
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.assertGreater(self.observer.dropped, 0)
        self.assertEqual(self.observer.sent + self.observer.dropped, 2000)
        self.assertEqual(len(self.complaints()), 1)
        received = self.journal.entries()
        self.assertEqual(len(received), self.observer.sent)
        self.assertEqual(received[0]["MESSAGE"], "event 0 " + "p" * 2000)

    def test_neverRaises(self):
        """
        An event whose text cannot be made (a format that fails, a
        field that cannot be turned into text) still sends an entry
        and raises nothing.
        """
        class Bad:
            def __str__(self):
                raise RuntimeError("no text")

            __repr__ = __str__

        self.observer({"log_format": "{bad}", "bad": Bad(), "log_level": LogLevel.info,
                       "log_namespace": "x"})
        entry = asDict(self.journal.receive())
        self.assertIn("Unable to format event", entry["MESSAGE"])


class JSONFileTests(SynchronousTestCase):
    """
    L{logs.JSONFileObserver}: JSON lines, read back by
    L{eventsFromJSONLogFile}, and log rotation.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "sysmon.json")
        self.stderr = io.StringIO()

    def observer(self, path: str | None = None) -> logs.JSONFileObserver:
        o = logs.JSONFileObserver(path or self.path, stderr=self.stderr, now=FakeClock())
        self.addCleanup(o.close)
        return o

    def read(self, path: str | None = None) -> list[dict]:
        with open(path or self.path) as f:
            return list(eventsFromJSONLogFile(f))

    def test_roundTrip(self):
        """
        Events come back from the file with their text, level, namespace,
        fields and failure traceback; the file is one JSON object per line
        with no record separator.
        """
        log = logger(self.observer(), "sysmon.statd.server")
        log.info("SM_MON for {name} from {peer}", name="client1", peer="127.0.0.1:811")
        log.warn("odd {n}", n=3)
        try:
            fail()
        except ZeroDivisionError:
            log.failure("check {check} raised", check="load")
        events = self.read()
        self.assertEqual([formatEvent(e) for e in events],
                         ["SM_MON for client1 from 127.0.0.1:811", "odd 3",
                          "check load raised"])
        self.assertEqual([e["log_level"] for e in events],
                         [LogLevel.info, LogLevel.warn, LogLevel.critical])
        self.assertEqual({e["log_namespace"] for e in events}, {"sysmon.statd.server"})
        self.assertEqual((events[0]["name"], events[0]["peer"]), ("client1", "127.0.0.1:811"))
        text = eventAsText(events[2], includeTimestamp=False)
        self.assertIn("ZeroDivisionError", text)
        with open(self.path, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x1e", raw)
        lines = raw.split(b"\n")
        self.assertEqual(lines[-1], b"")
        self.assertEqual([jsonlib.loads(line)["log_namespace"] for line in lines[:-1]],
                         ["sysmon.statd.server"] * 3)

    def test_mode(self):
        """
        A new file is created mode 0640 whatever the umask; an existing
        file keeps its mode and its content, and the events are appended.
        """
        old = os.umask(0o077)
        try:
            self.observer()
        finally:
            os.umask(old)
        self.assertEqual(os.stat(self.path).st_mode & 0o7777, 0o640)
        other = os.path.join(self.dir, "old.json")
        with open(other, "w") as f:
            f.write('{"log_format": "before", "log_level": {"__class_uuid__": '
                    '"02E59486-F24D-46AD-8224-3ACDF2A5732A", "name": "info"}}\n')
        os.chmod(other, 0o600)
        logger(self.observer(other)).info("after")
        self.assertEqual(os.stat(other).st_mode & 0o7777, 0o600)
        self.assertEqual([formatEvent(e) for e in self.read(other)], ["before", "after"])

    def test_rotated(self):
        """
        When the file is moved away (logrotate's create mode), the next
        event goes to a new file at the path, mode 0640; the moved file
        keeps what was written before.
        """
        log = logger(self.observer())
        log.info("before")
        os.rename(self.path, self.path + ".1")
        log.info("after")
        log.info("again")
        self.assertEqual([formatEvent(e) for e in self.read(self.path + ".1")], ["before"])
        self.assertEqual([formatEvent(e) for e in self.read()], ["after", "again"])
        self.assertEqual(os.stat(self.path).st_mode & 0o7777, 0o640)

    def test_deleted(self):
        """
        A deleted file is created again at the next event.
        """
        log = logger(self.observer())
        log.info("before")
        os.unlink(self.path)
        log.info("after")
        self.assertEqual([formatEvent(e) for e in self.read()], ["after"])

    def test_copytruncate(self):
        """
        A file truncated in place (logrotate's copytruncate) is written
        from its new end: no hole of zeros before the next line.
        """
        log = logger(self.observer())
        log.info("before, quite a long line to leave a hole if written at the old offset")
        os.truncate(self.path, 0)
        log.info("after")
        with open(self.path, "rb") as f:
            self.assertNotIn(b"\x00", f.read())
        self.assertEqual([formatEvent(e) for e in self.read()], ["after"])

    def test_cannotReopen(self):
        """
        When the path cannot be opened again after the file moved, events
        keep going to the moved file, and stderr says so once.
        """
        log = logger(self.observer())
        log.info("before")
        os.rename(self.path, self.path + ".1")
        os.mkdir(self.path)
        log.info("after")
        log.info("again")
        self.assertEqual([formatEvent(e) for e in self.read(self.path + ".1")],
                         ["before", "after", "again"])
        complaints = self.stderr.getvalue().splitlines()
        self.assertEqual(len(complaints), 1)
        self.assertIn("still writing to the old file", complaints[0])

    def test_cannotOpen(self):
        """
        A file that cannot be opened at start is an error there.
        """
        self.assertRaises(OSError, logs.jsonFileObserver,
                          os.path.join(self.dir, "missing", "x.json"))


class SyslogTests(SynchronousTestCase):
    """
    L{logs.syslogObserver} with the stdlib C{syslog} module patched.
    """

    def setUp(self):
        self.calls: list[tuple[int, str]] = []
        self.opened: list[tuple] = []
        self.patch(syslog, "syslog", lambda priority, message: self.calls.append(
            (priority, message)))
        self.patch(syslog, "openlog", lambda *a: self.opened.append(a))

    def test_priorities(self):
        """
        openlog gets the identifier, LOG_PID and the facility; each event is
        one syslog call with the level's priority and the facility,
        prefixed with the logger's namespace.
        """
        log = logger(logs.syslogObserver("sysmon-x", "local3"), "sysmon.watchdog")
        self.assertEqual(self.opened, [("sysmon-x", syslog.LOG_PID, syslog.LOG_LOCAL3)])
        log.debug("d")
        log.info("i {n}", n=1)
        log.warn("w")
        log.error("e")
        log.critical("c")
        self.assertEqual(self.calls, [
            (syslog.LOG_DEBUG | syslog.LOG_LOCAL3, "[sysmon.watchdog] d"),
            (syslog.LOG_INFO | syslog.LOG_LOCAL3, "[sysmon.watchdog] i 1"),
            (syslog.LOG_WARNING | syslog.LOG_LOCAL3, "[sysmon.watchdog] w"),
            (syslog.LOG_ERR | syslog.LOG_LOCAL3, "[sysmon.watchdog] e"),
            (syslog.LOG_CRIT | syslog.LOG_LOCAL3, "[sysmon.watchdog] c"),
        ])

    def test_multiLine(self):
        """
        A failure's traceback goes line by line, each at the event's
        priority, after the message.
        """
        log = logger(logs.syslogObserver(), "sysmon.x")
        try:
            fail()
        except ZeroDivisionError:
            log.failure("oops")
        self.assertGreater(len(self.calls), 3)
        self.assertEqual(self.calls[0], (syslog.LOG_CRIT | syslog.LOG_DAEMON, "[sysmon.x] oops"))
        self.assertEqual(self.calls[1][1], "[sysmon.x] Traceback (most recent call last):")
        self.assertTrue(any("ZeroDivisionError" in m for _, m in self.calls))
        self.assertEqual({p for p, _ in self.calls}, {syslog.LOG_CRIT | syslog.LOG_DAEMON})
        self.assertFalse([m for _, m in self.calls if "\n" in m])

    def test_badFacility(self):
        """
        An unknown facility is refused with the ones there are.
        """
        e = self.assertRaises(ValueError, logs.syslogObserver, "x", "local9")
        self.assertIn("local7", str(e))


def setEnv(case: SynchronousTestCase, **values: str | None) -> None:
    """
    Set (or, with L{None}, unset) environment variables for one test.
    """
    for name, value in values.items():
        old = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        case.addCleanup(lambda n=name, o=old: os.environ.__setitem__(n, o) if o is not None
                        else os.environ.pop(n, None))


class ObserversTests(SynchronousTestCase):
    """
    L{logs.observers}: what the tac's [log] section turns on.
    """

    def setUp(self):
        self.journal = FakeJournal(self)
        self.calls: list[tuple[int, str]] = []
        self.patch(syslog, "syslog", lambda p, m: self.calls.append((p, m)))
        self.patch(syslog, "openlog", lambda *a: None)

    def test_journalYes(self):
        """
        journal = yes sends to $SYSMON_JOURNAL_SOCKET, through a level
        filter: below the level nothing is sent.
        """
        chosen = logs.observers("yes", level=LogLevel.info,
                                environ={"SYSMON_JOURNAL_SOCKET": self.journal.path})
        self.assertEqual(len(chosen), 1)
        self.assertIsInstance(chosen[0], FilteringLogObserver)
        log = logger(chosen[0])
        log.debug("hidden")
        log.info("shown")
        self.assertEqual([e["MESSAGE"] for e in self.journal.entries()], ["shown"])

    def test_journalAuto(self):
        """
        journal = auto is the journal when systemd gave us one
        ($JOURNAL_STREAM) or its socket exists, else nothing.
        """
        missing = os.path.join(self.journal.dir, "none")
        self.assertEqual(logs.observers("auto", environ={"SYSMON_JOURNAL_SOCKET": missing}),
                         [])
        self.assertEqual(len(logs.observers("auto", environ={
            "SYSMON_JOURNAL_SOCKET": missing, "JOURNAL_STREAM": "8:1234"})), 1)
        chosen = logs.observers("AUTO", environ={"SYSMON_JOURNAL_SOCKET": self.journal.path})
        logger(chosen[0]).warn("here")
        self.assertEqual([e["MESSAGE"] for e in self.journal.entries()], ["here"])
        self.assertEqual(logs.observers("no", environ={
            "SYSMON_JOURNAL_SOCKET": self.journal.path, "JOURNAL_STREAM": "8:1"}), [])

    def test_syslogAndJSON(self):
        """
        syslog and json add their observers, each behind the level filter
        (given by name here).
        """
        path = os.path.abspath(self.mktemp())
        chosen = logs.observers("no", syslog=True, json=path, level="warn", environ={})
        self.assertEqual(len(chosen), 2)
        log = logger(LogPublisher(*chosen))
        log.info("quiet")
        log.warn("loud")
        self.assertEqual(self.calls,
                         [(syslog.LOG_WARNING | syslog.LOG_DAEMON, "[sysmon.test] loud")])
        with open(path) as f:
            self.assertEqual([formatEvent(e) for e in eventsFromJSONLogFile(f)], ["loud"])

    def test_bad(self):
        """
        A journal value other than yes/no/auto, or an unknown level, is a
        ValueError naming what is accepted.
        """
        e = self.assertRaises(ValueError, logs.observers, "sometimes", environ={})
        self.assertIn("yes, no or auto", str(e))
        e = self.assertRaises(ValueError, logs.observers, "no", level="loud", environ={})
        self.assertIn("debug, info, warn, error", str(e))


class FactoryTests(SynchronousTestCase):
    """
    The twistd --logger factories, configured by the environment.
    """

    def test_journal(self):
        """
        journal() sends to $SYSMON_JOURNAL_SOCKET with
        $SYSMON_LOG_IDENTIFIER, from $SYSMON_LOG_LEVEL up.
        """
        journal = FakeJournal(self)
        setEnv(self, SYSMON_JOURNAL_SOCKET=journal.path, SYSMON_LOG_IDENTIFIER="sysmon-netdump",
               SYSMON_LOG_LEVEL="warn")
        log = logger(logs.journal())
        log.info("quiet")
        log.error("loud")
        entries = journal.entries()
        self.assertEqual([(e["MESSAGE"], e["SYSLOG_IDENTIFIER"]) for e in entries],
                         [("loud", "sysmon-netdump")])

    def test_journalDefaults(self):
        """
        By default journal() lets every level through (as twistd's own log
        file) and names entries "sysmon".
        """
        journal = FakeJournal(self)
        setEnv(self, SYSMON_JOURNAL_SOCKET=journal.path, SYSMON_LOG_IDENTIFIER=None,
               SYSMON_LOG_LEVEL=None)
        logger(logs.journal()).debug("fine detail")
        entries = journal.entries()
        self.assertEqual([(e["MESSAGE"], e["SYSLOG_IDENTIFIER"], e["PRIORITY"])
                          for e in entries], [("fine detail", "sysmon", "7")])

    def test_jsonFile(self):
        """
        json() appends to $SYSMON_JSON_LOG.
        """
        path = os.path.abspath(self.mktemp())
        setEnv(self, SYSMON_JSON_LOG=path, SYSMON_LOG_LEVEL=None)
        logger(logs.json()).info("to {where}", where="file")
        with open(path) as f:
            self.assertEqual([formatEvent(e) for e in eventsFromJSONLogFile(f)], ["to file"])

    def test_jsonStdout(self):
        """
        Without $SYSMON_JSON_LOG, json() writes JSON lines (no record
        separator) to the standard output it found when called.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        setEnv(self, SYSMON_JSON_LOG=None, SYSMON_LOG_LEVEL=None)
        observer = logs.json()
        self.patch(sys, "stdout", io.StringIO())
        logger(observer).info("to {where}", where="stdout")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertEqual(jsonlib.loads(lines[0])["where"], "stdout")

    def test_jsonStdoutClosed(self):
        """
        A closed standard output costs the events, not an exception, and
        the original standard error says so.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "__stderr__", err)
        setEnv(self, SYSMON_JSON_LOG=None, SYSMON_LOG_LEVEL=None)
        observer = logs.json()
        out.close()
        # Called directly: a LogPublisher would hide an exception.
        observer({"log_format": "lost", "log_level": LogLevel.info, "log_namespace": "x",
                  "log_time": time.time()})
        self.assertIn("cannot write JSON log lines to standard output", err.getvalue())


class TwistdLoggerTests(SynchronousTestCase):
    """
    A real C{twistd --logger sysmon.ops.logs.journal netdump} child.
    """

    def test_netdumpToJournal(self):
        """
        twistd's own lines and netdump's start line reach the journal socket
        named by $SYSMON_JOURNAL_SOCKET, with netdump's named fields;
        its stop line too, on SIGTERM.
        """
        journal = FakeJournal(self)
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        config = os.path.join(tmp, "netdump.conf")
        open(config, "w").close()
        env = dict(os.environ, PYTHONPATH=CHECKOUT, SYSMON_JOURNAL_SOCKET=journal.path,
                   SYSMON_LOG_IDENTIFIER="sysmon-netdump")
        env.pop("SYSMON_LOG_LEVEL", None)
        child = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "--logger", "sysmon.ops.logs.journal", "netdump",
             "--config", config, "--dumpdir", os.path.join(tmp, "crash"), "--port", "0",
             "--addr", "127.0.0.1", "--secure", "0"],
            cwd=CHECKOUT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(stopProcess, child)
        self.addCleanup(lambda: child.stderr and child.stderr.close())
        seen = waitFor(journal, "netdump listening on", child)
        messages = [e["MESSAGE"] for e in seen]
        self.assertTrue(any(m.startswith("twistd ") and m.endswith("starting up.")
                            for m in messages), messages)
        start = seen[-1]
        self.assertEqual(start["SYSLOG_IDENTIFIER"], "sysmon-netdump")
        self.assertEqual(start["PRIORITY"], "6")
        self.assertEqual(start["CODE_NAMESPACE"], "sysmon.netdump.tap.NetdumpService")
        self.assertEqual(start["SYSMON_ADDR"], "127.0.0.1")
        self.assertEqual(start["SYSMON_PORT"], start["MESSAGE"].split(":")[1].split()[0])
        waitHandler(child.pid, signal.SIGTERM)
        child.send_signal(signal.SIGTERM)
        waitFor(journal, "Server Shut Down.", child, exited=True)
        # twistd ends itself with the signal that stopped it (systemd counts
        # SIGTERM as a clean end).
        self.assertEqual(child.wait(30), -signal.SIGTERM)


def waitHandler(pid: int, signum: int, timeout: float = 30) -> None:
    """
    Wait until process C{pid} catches C{signum}: twistd starts the
    services before the reactor installs its signal handlers, so a SIGTERM
    right after a start line could kill it without its shutdown.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (signum - 1)):
                    return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} does not catch signal {signum}")


def waitFor(journal: FakeJournal, text: str, child: subprocess.Popen,
            timeout: float = 60, exited: bool = False) -> list[dict[str, str]]:
    """
    Read entries until one whose MESSAGE contains C{text}.

    @param exited: the child may exit meanwhile (its last entries are
        still in the socket's queue).
    @return: the entries read, that one last.
    """
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = journal.receive(0.2)
        if entry is not None:
            seen.append(asDict(entry))
            if text in seen[-1]["MESSAGE"]:
                return seen
        elif not exited and child.poll() is not None:
            err = child.stderr.read().decode() if child.stderr else ""
            raise AssertionError(f"the child exited ({child.returncode}) before {text!r}:\n"
                                 f"{[e['MESSAGE'] for e in seen]}\n{err}")
    raise AssertionError(f"{text!r} not logged in {timeout}s: {[e['MESSAGE'] for e in seen]}")


class JournaldTests(SynchronousTestCase):
    """
    Interoperability: a real C{systemd-journald}, in a mount namespace of
    its own whose C{/run} is a temporary directory, stores what the
    observer sends; C{journalctl --directory} reads it back.
    """

    JOURNALD = "/lib/systemd/systemd-journald"

    def setUp(self):
        if os.geteuid() != 0:
            raise self.skipTest("a journald of the test's own needs root (a mount namespace)")
        for tool in (self.JOURNALD, shutil.which("journalctl"), shutil.which("unshare")):
            if not tool or not os.access(tool, os.X_OK):
                raise self.skipTest("systemd-journald, journalctl and unshare are needed "
                                    "(apt-get install systemd util-linux)")
        if not os.path.exists("/etc/machine-id"):
            raise self.skipTest("journald needs /etc/machine-id")
        self.dir = tempfile.mkdtemp(prefix="sjd")
        self.addCleanup(shutil.rmtree, self.dir, True)
        run = os.path.join(self.dir, "run")
        os.makedirs(run)
        steps = [f"mount --bind {run} /run"]
        if os.path.exists("/etc/systemd/journald.conf"):
            conf = os.path.join(self.dir, "journald.conf")
            with open(conf, "w") as f:
                f.write("[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\n"
                        "ForwardToKMsg=no\nForwardToConsole=no\nForwardToWall=no\n"
                        "RateLimitBurst=0\n")
            steps.append(f"mount --bind {conf} /etc/systemd/journald.conf")
        steps.append(f"exec {self.JOURNALD}")
        self.output = os.path.join(self.dir, "journald.out")
        with open(self.output, "w") as out:
            self.journald = subprocess.Popen(
                ["unshare", "--mount", "sh", "-c", " && ".join(steps)],
                stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(stopProcess, self.journald)
        self.socket = os.path.join(run, "systemd", "journal", "socket")
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.journald.poll() is not None or time.monotonic() > deadline:
                with open(self.output) as f:
                    raise self.skipTest(f"cannot run a journald here: {f.read().strip()}")
            time.sleep(0.05)

    def read(self, identifier: str, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(
                ["journalctl", "--directory", os.path.join(self.dir, "run", "log", "journal"),
                 "-o", "json", "--all", "--no-pager", "-t", identifier],
                capture_output=True, text=True)
            entries = [jsonlib.loads(line) for line in done.stdout.splitlines() if line]
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.1)

    def test_journald(self):
        """
        journald stores each entry with its priority, identifier,
        namespace, named fields, a multi-line value, a failure's traceback,
        and an entry big enough to go by memfd.
        """
        observer = logs.JournalObserver(self.socket, "sysmon-interop")
        self.addCleanup(observer.close)
        log = logger(observer, "sysmon.statd.server")
        log.warn("refusing {what} from {host}:{port}", what="SM_MON", host="10.0.0.8",
                 port=811, console="oops\nline 2")
        try:
            fail()
        except ZeroDivisionError:
            log.failure("check {check} raised", check="load")
        big = "y" * (12 * 1024 * 1024)
        log.info("big", blob=big)
        self.assertEqual((observer.sent, observer.dropped, observer.viaMemfd), (3, 0, 1))

        def text(value: Any) -> str:
            return bytes(value).decode() if isinstance(value, list) else value

        entries = self.read("sysmon-interop", 3)
        self.assertEqual([text(e["MESSAGE"]).split("\n")[0] for e in entries],
                         ["refusing SM_MON from 10.0.0.8:811", "check load raised", "big"])
        first = entries[0]
        self.assertEqual((first["PRIORITY"], first["CODE_NAMESPACE"], first["SYSMON_HOST"],
                          first["SYSMON_PORT"], text(first["SYSMON_CONSOLE"])),
                         ("4", "sysmon.statd.server", "10.0.0.8", "811", "oops\nline 2"))
        self.assertEqual(first["_TRANSPORT"], "journal")
        self.assertEqual(first["_PID"], str(os.getpid()))
        self.assertIn("ZeroDivisionError", text(entries[1]["MESSAGE"]))
        self.assertEqual(entries[1]["PRIORITY"], "2")
        self.assertEqual(text(entries[2]["SYSMON_BLOB"]), big)
