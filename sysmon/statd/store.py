"""
statd's durable state: one SQLite database holding the state number, the
monitor list and, per monitored host, its last known state and whether it
must be told that we rebooted.

Writes are made durable (C{synchronous=FULL}) by a dedicated thread; writes
that arrive together share one commit (group commit) and each caller's
Deferred fires in the reactor thread only after that commit.  Reads come
from an in-memory mirror kept in the reactor thread.  Other processes (the
C{sysmon-statd} tool) read the database directly; SQLite's WAL gives them a
consistent view while the daemon writes.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from typing import Any, Callable, Iterable

import attrs
from twisted.internet import defer

__all__ = ["Entry", "StatusStore", "readStatus", "SCHEMA"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS monitor (
    mon_name TEXT NOT NULL, my_name TEXT NOT NULL, prog INTEGER NOT NULL,
    vers INTEGER NOT NULL, proc INTEGER NOT NULL, priv BLOB NOT NULL,
    PRIMARY KEY (mon_name, my_name, prog, vers, proc));
CREATE TABLE IF NOT EXISTS host (
    name TEXT PRIMARY KEY, state INTEGER, notify INTEGER NOT NULL DEFAULT 0);
"""


@attrs.frozen
class Entry:
    """
    One monitor request: lockd (my_name, prog/vers/proc) wants to hear
    about mon_name, with its 16-byte priv.
    """

    monName: str
    myName: str
    prog: int
    vers: int
    proc: int
    priv: bytes

    @property
    def key(self) -> tuple[str, str, int, int, int]:
        return (self.monName, self.myName, self.prog, self.vers, self.proc)


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


def readStatus(path: str) -> tuple[int, list[tuple[str, bool, bool]]]:
    """
    For the listing tool: the state number and, per host, (name, monitored,
    needs notification), from a consistent snapshot.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        db.execute("BEGIN")
        row = db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
        monitored = {r[0] for r in db.execute("SELECT DISTINCT mon_name FROM monitor")}
        hosts = {r[0]: bool(r[1]) for r in db.execute("SELECT name, notify FROM host")}
        db.execute("COMMIT")
    finally:
        db.close()
    names = sorted(set(hosts) | monitored)
    return (row[0] if row else 0, [(n, n in monitored, hosts.get(n, False)) for n in names])


class StatusStore:
    """
    The database and its mirror.

    @ivar state: the local state number.
    @ivar entries: key -> L{Entry}, the monitor list.
    @ivar hosts: host name -> (last known state, needs notification).
    """

    def __init__(self, path: str, reactor: Any, threaded: bool = True) -> None:
        self.path = path
        self.reactor = reactor
        self.threaded = threaded
        self.db = connect(path)
        row = self.db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
        self.state = row[0] if row else 0
        self.entries: dict[tuple[str, str, int, int, int], Entry] = {
            (r[0], r[1], r[2], r[3], r[4]): Entry(r[0], r[1], r[2], r[3], r[4], bytes(r[5]))
            for r in self.db.execute("SELECT mon_name, my_name, prog, vers, proc, priv FROM monitor")
        }
        self.hosts: dict[str, tuple[int | None, bool]] = {
            r[0]: (r[1], bool(r[2])) for r in self.db.execute("SELECT name, state, notify FROM host")
        }
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.writes = 0

    # -- writing -------------------------------------------------------------

    def _write(self, statements: list[tuple[str, tuple]]) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if not self.threaded:
            self._commit([(statements, d)])
            return d
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="statd-writer", daemon=True)
            self._thread.start()
        self._queue.put((statements, d))
        return d

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[list[tuple[str, tuple]], defer.Deferred[None]]]) -> None:
        """
        Apply every write of C{batch} in one durable transaction, then fire
        their Deferreds in the reactor thread.
        """
        error: Exception | None = None
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for statements, _ in batch:
                for sql, params in statements:
                    self.db.execute(sql, params)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            error = e
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self.commits += 1
        self.writes += len(batch)
        fire = self._fireAll if self.threaded else self._fireNow
        fire(batch, error)

    def _fireAll(self, batch: list, error: Exception | None) -> None:
        self.reactor.callFromThread(self._fireNow, batch, error)

    @staticmethod
    def _fireNow(batch: list, error: Exception | None) -> None:
        for _, d in batch:
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    def stop(self) -> defer.Deferred[None]:
        """
        Finish queued commits, end the thread, close the database.
        """
        if self._thread is None:
            self.db.close()
            return defer.succeed(None)
        thread, self._thread = self._thread, None
        self._queue.put(None)
        from twisted.internet import threads

        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), thread.join)
        return d.addCallback(lambda _: self.db.close())

    # -- operations (mirror updated now, durable when the Deferred fires) ---

    def setState(self, state: int) -> defer.Deferred[None]:
        self.state = state
        return self._write([("INSERT OR REPLACE INTO meta (key, value) VALUES ('state', ?)",
                             (state,))])

    def _hostRow(self, name: str) -> tuple[str, tuple]:
        state, notify = self.hosts.get(name, (None, False))
        self.hosts[name] = (state, notify)
        return ("INSERT OR IGNORE INTO host (name, state, notify) VALUES (?, ?, ?)",
                (name, state, int(notify)))

    def monitor(self, entry: Entry) -> defer.Deferred[None]:
        self.entries[entry.key] = entry
        return self._write([
            ("INSERT OR REPLACE INTO monitor VALUES (?, ?, ?, ?, ?, ?)",
             (entry.monName, entry.myName, entry.prog, entry.vers, entry.proc, entry.priv)),
            self._hostRow(entry.monName),
        ])

    def unmonitor(self, keys: Iterable[tuple[str, str, int, int, int]]) -> defer.Deferred[None]:
        statements = []
        for key in keys:
            self.entries.pop(key, None)
            statements.append(("DELETE FROM monitor WHERE mon_name = ? AND my_name = ? AND "
                               "prog = ? AND vers = ? AND proc = ?", key))
        return self._write(statements) if statements else defer.succeed(None)

    def setHost(self, name: str, state: int | None = None,
                notify: bool | None = None) -> defer.Deferred[None]:
        old = self.hosts.get(name, (None, False))
        new = (old[0] if state is None else state, old[1] if notify is None else notify)
        self.hosts[name] = new
        return self._write([("INSERT OR REPLACE INTO host (name, state, notify) VALUES (?, ?, ?)",
                             (name, new[0], int(new[1])))])

    def markAllForNotify(self) -> defer.Deferred[None]:
        """
        Every monitored host must hear that we rebooted.
        """
        statements = []
        for name in {e.monName for e in self.entries.values()}:
            state = self.hosts.get(name, (None, False))[0]
            self.hosts[name] = (state, True)
            statements.append(("INSERT OR REPLACE INTO host (name, state, notify) "
                               "VALUES (?, ?, 1)", (name, state)))
        return self._write(statements) if statements else defer.succeed(None)

    def toNotify(self) -> list[str]:
        return sorted(name for name, (_, notify) in self.hosts.items() if notify)

    def matching(self, predicate: Callable[[Entry], bool]) -> list[Entry]:
        return [e for e in self.entries.values() if predicate(e)]
