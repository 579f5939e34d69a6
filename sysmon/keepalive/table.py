"""
The monitored process table: one SQLite database (default
C{/etc/keepalive.d/keepalive.data}) that outlives keepalive, so a new
keepalive adopts the processes the old one left running, and that
C{spawndaemon -L} reads while keepalive writes.

L{Table} is synchronous: keepalive reads it once at start, C{spawndaemon -L}
opens it read-only.  While keepalive runs, its writes go through a
L{TableWriter}, which commits them in one thread of its own, in order, so
the reactor never waits for the disk.

The database (schema version L{SCHEMA_VERSION} in C{PRAGMA user_version},
L{APPLICATION_ID} in C{PRAGMA application_id}) holds:

  - C{process}: one row per L{Record}, keyed by slot; the config is its
    L{ProcessConfig.toJSON} text, C{failures} a JSON list, C{state} the
    L{State} value;
  - C{meta}: keepalive's own facts (its pid, when it started), as text;
  - C{sequence}: the highest slot ever saved, so a deleted record's slot is
    not given to another process until L{Table.clear}.

It uses WAL, so a reader sees the last committed state without blocking
the writer.  The directory is created 0700 and the file 0600 (SQLite gives
the C{-wal} and C{-shm} files the database file's mode).
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import urllib.parse
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from sysmon.keepalive.config import ProcessConfig
from sysmon.keepalive.errors import KeepaliveError
from sysmon.keepalive.policy import State

__all__ = [
    "APPLICATION_ID",
    "Record",
    "SCHEMA_VERSION",
    "Table",
    "TableError",
    "TableWriter",
]

SCHEMA_VERSION = 1
"""
The version of the table's layout, in C{PRAGMA user_version}.
"""

APPLICATION_ID = 0x4B504C56  # "KPLV": keepalive's process table
"""
C{PRAGMA application_id} of a keepalive table: a database without it is
not ours and is left alone.
"""

_SCHEMA = f"""
CREATE TABLE process (
    slot INTEGER PRIMARY KEY,
    config TEXT NOT NULL,
    grp TEXT,
    critical INTEGER NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    child INTEGER NOT NULL,
    match_args INTEGER NOT NULL,
    down_code INTEGER,
    reject_code INTEGER,
    daemonizes INTEGER NOT NULL,
    registered REAL NOT NULL,
    started REAL NOT NULL,
    first_died REAL NOT NULL,
    last_died REAL NOT NULL,
    failures TEXT NOT NULL,
    restarts INTEGER NOT NULL,
    log_path TEXT,
    last_exit TEXT NOT NULL,
    spawned INTEGER NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sequence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

_COLUMNS = (
    "slot, config, grp, critical, state, pid, start_time, child, match_args, "
    "down_code, reject_code, daemonizes, registered, started, first_died, "
    "last_died, failures, restarts, log_path, last_exit, spawned"
)

_Row = tuple[Any, ...]


class TableError(KeepaliveError):
    """
    The table cannot be opened, read or written.

    @ivar path: the table's path.
    @ivar reason: what is wrong.
    """

    def __init__(self, path: str, reason: str, message: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(message if message is not None else f"table {path}: {reason}")


@attrs.define
class Record:
    """
    One monitored process: a row of the table.

    @ivar slot: its number in the table (C{spawndaemon -s}).
    @ivar config: what to run and how.
    @ivar group: the name of its group, or L{None}.
    @ivar critical: its failure restarts its whole group.
    @ivar state: where it is in its life.
    @ivar pid: its process id, 0 when it has none.
    @ivar startTime: field 22 of C{/proc/<pid>/stat} (clock ticks since
        boot), so a reused pid is not mistaken for it; 0: unknown.
    @ivar child: keepalive (this one) started it.
    @ivar matchArgs: find it by name and arguments (C{-a}).
    @ivar downCode: a restart script exiting with this code puts it down.
    @ivar rejectCode: a restart script exiting with this code refused; the
        attempt counts as a failure.
    @ivar daemonizes: it forks into the background.
    @ivar registered: wall-clock time of its registration.
    @ivar started: wall-clock time of its last start.
    @ivar firstDied: wall-clock time of its first death, 0 if none.
    @ivar lastDied: wall-clock time of its last death, 0 if none.
    @ivar failures: wall-clock times of its recent failures.
    @ivar restarts: how many times it was restarted.
    @ivar logPath: the file its output goes to, or L{None}.
    @ivar lastExit: how it last ended ("exited with status 3", "killed by
        SIGKILL"), empty if it has not.
    @ivar spawned: keepalive (this one or an earlier one) started the
        process that runs now; L{False} for a process registered by pid
        (C{spawndaemon -R}) that keepalive has not restarted yet.
        C{spawndaemon -Q} stops the spawned ones and leaves the others.
    """

    slot: int
    config: ProcessConfig
    group: str | None = None
    critical: bool = False
    state: State = State.START
    pid: int = 0
    startTime: int = 0
    child: bool = False
    matchArgs: bool = False
    downCode: int | None = None
    rejectCode: int | None = None
    daemonizes: bool = False
    registered: float = 0.0
    started: float = 0.0
    firstDied: float = 0.0
    lastDied: float = 0.0
    failures: tuple[float, ...] = ()
    restarts: int = 0
    logPath: str | None = None
    lastExit: str = ""
    spawned: bool = False


def _toRow(record: Record) -> _Row:
    """
    The row for C{record}: a snapshot of it as it is now.
    """
    return (
        record.slot,
        record.config.toJSON(),
        record.group,
        int(record.critical),
        State(record.state).value,
        record.pid,
        record.startTime,
        int(record.child),
        int(record.matchArgs),
        record.downCode,
        record.rejectCode,
        int(record.daemonizes),
        float(record.registered),
        float(record.started),
        float(record.firstDied),
        float(record.lastDied),
        json.dumps([float(t) for t in record.failures]),
        record.restarts,
        record.logPath,
        record.lastExit,
        int(record.spawned),
    )


def _fromRow(row: _Row) -> Record:
    (slot, config, group, critical, state, pid, startTime, child, matchArgs,
     downCode, rejectCode, daemonizes, registered, started, firstDied, lastDied,
     failures, restarts, logPath, lastExit, spawned) = row
    return Record(
        slot=slot,
        config=ProcessConfig.fromJSON(config),
        group=group,
        critical=bool(critical),
        state=State(state),
        pid=pid,
        startTime=startTime,
        child=bool(child),
        matchArgs=bool(matchArgs),
        downCode=downCode,
        rejectCode=rejectCode,
        daemonizes=bool(daemonizes),
        registered=registered,
        started=started,
        firstDied=firstDied,
        lastDied=lastDied,
        failures=tuple(float(t) for t in json.loads(failures)),
        restarts=restarts,
        logPath=logPath,
        lastExit=lastExit,
        spawned=bool(spawned),
    )


class Table:
    """
    The table file, opened for reading and writing or read-only.

    One L{Table} is used from one thread at a time: keepalive loads it,
    then hands it to a L{TableWriter} which alone uses it from then on.

    @ivar path: the table file's absolute path.
    @ivar readonly: opened read-only (C{spawndaemon -L}).
    """

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        """
        Open (and when not read-only, create) the table at C{path}.

        @param path: the table file; a relative path is made absolute.
        @param readonly: open it read-only (it must exist then).
        @raise TableError: there is no table at C{path} (read-only), or the
            file is not a keepalive table, is from a newer keepalive, or
            cannot be opened.
        """
        self.path = os.path.abspath(path)
        self.readonly = readonly
        self._db: sqlite3.Connection | None = None
        db = self._openReadonly() if readonly else self._openWritable()
        try:
            self._checkSchema(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    # -- opening ---------------------------------------------------------------

    def _error(self, reason: str) -> TableError:
        return TableError(self.path, reason)

    def _openWritable(self) -> sqlite3.Connection:
        parent = os.path.dirname(self.path)
        try:
            if os.path.lexists(parent) and not os.path.isdir(parent):
                raise self._error(f"cannot create it: {parent} is not a directory")
            if not os.path.isdir(parent):
                os.makedirs(parent, mode=0o700)
                os.chmod(parent, 0o700)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR)
            else:
                os.fchmod(fd, 0o600)
            os.close(fd)
        except IsADirectoryError:
            raise self._error("is a directory, not a table file") from None
        except OSError as e:
            raise self._error(f"cannot open: {e.strerror}") from None
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as e:
            raise self._error(f"cannot open: {e}") from None
        return db

    def _openReadonly(self) -> sqlite3.Connection:
        if not os.path.exists(self.path):
            raise TableError(
                self.path,
                "no table",
                f"no table at {self.path} (keepalive has never run with it)",
            )
        if os.path.isdir(self.path):
            raise self._error("is a directory, not a table file")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as e:
            raise self._error(f"cannot read: {e.strerror}") from None
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
        except sqlite3.Error as e:
            raise self._error(f"cannot read: {e}") from None
        try:
            db.execute("PRAGMA user_version").fetchone()
        except sqlite3.OperationalError as e:
            db.close()
            if os.path.exists(self.path + "-wal"):
                raise self._error(f"cannot read: {e}") from None
            # No keepalive has the table open (it would have a -wal file),
            # and this reader may not create the -shm file that SQLite
            # wants for a WAL database: read the file as it is.
            try:
                db = sqlite3.connect(
                    uri + "&immutable=1", uri=True, check_same_thread=False, timeout=30
                )
            except sqlite3.Error as e:
                raise self._error(f"cannot read: {e}") from None
        except sqlite3.DatabaseError:
            pass  # not a database at all: _checkSchema says so
        return db

    def _checkSchema(self, db: sqlite3.Connection) -> None:
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            application = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {
                row[0]
                for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        except sqlite3.OperationalError as e:
            raise self._error(f"cannot read: {e}") from None
        except sqlite3.DatabaseError as e:
            raise self._error(f"not a keepalive table ({e})") from None
        if application == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise self._error(
                    f"written by a newer keepalive (schema version {version}; this "
                    f"keepalive reads version {SCHEMA_VERSION})"
                )
            if version < 1 or not {"process", "meta", "sequence"} <= tables:
                raise self._error(f"a damaged keepalive table (schema version {version})")
            if not self.readonly:
                try:
                    db.execute("PRAGMA journal_mode = WAL")
                    db.execute("PRAGMA synchronous = NORMAL")
                except sqlite3.Error as e:
                    raise self._error(f"cannot open: {e}") from None
            return
        if application != 0 or version != 0 or tables:
            raise self._error("not a keepalive table (another program's SQLite database)")
        if self.readonly:
            raise self._error("not a keepalive table (an empty database)")
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except sqlite3.Error as e:
            raise self._error(f"cannot create the table: {e}") from None

    # -- reading ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise self._error("the table is closed")
        return self._db

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[_Row]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._error(f"cannot read: {e}") from None

    def load(self) -> list[Record]:
        """
        Every record, ordered by slot.

        @raise TableError: the table cannot be read, or a row is damaged
            (the message names its slot).
        """
        records = []
        for row in self._read(f"SELECT {_COLUMNS} FROM process ORDER BY slot"):
            try:
                records.append(_fromRow(row))
            except (ValueError, TypeError) as e:
                raise self._error(f"slot {row[0]}: a damaged record ({e})") from None
        return records

    def nextSlot(self) -> int:
        """
        The slot for the next new record: 1 + the highest slot ever saved
        since the table was created or cleared.  It does not reserve the
        slot: the caller saves a record with it (or counts on from it).
        """
        row = self._read(
            "SELECT max(coalesce((SELECT last FROM sequence WHERE id = 1), 0),"
            " coalesce((SELECT max(slot) FROM process), 0))"
        )
        return int(row[0][0]) + 1

    def meta(self) -> dict[str, str]:
        """
        The values given to L{setMeta}, as text.
        """
        rows = self._read("SELECT key, value FROM meta ORDER BY key")
        return {key: value for key, value in rows}

    # -- writing ---------------------------------------------------------------

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """
        Run C{statements} in one transaction.
        """
        if self.readonly:
            raise self._error("opened read-only")
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    db.execute(sql, params)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self._error(f"cannot write: {e}") from None

    @staticmethod
    def _saveStatements(row: _Row) -> list[tuple[str, tuple[Any, ...]]]:
        return [
            (f"INSERT OR REPLACE INTO process ({_COLUMNS}) VALUES "
             f"({', '.join('?' * len(row))})", row),
            ("INSERT INTO sequence (id, last) VALUES (1, ?) "
             "ON CONFLICT (id) DO UPDATE SET last = max(last, excluded.last)", (row[0],)),
        ]

    @staticmethod
    def _metaStatements(values: dict[str, str | int | float]) -> list[tuple[str, tuple[Any, ...]]]:
        statements = []
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise TypeError(f"meta value for {key} must be text or a number, not {value!r}")
            statements.append(
                ("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))
            )
        return statements

    _DELETE = "DELETE FROM process WHERE slot = ?"
    _CLEAR = [
        ("DELETE FROM process", ()),
        ("DELETE FROM meta", ()),
        ("DELETE FROM sequence", ()),
    ]

    def save(self, record: Record) -> None:
        """
        Write C{record} (a new one, or the new state of the one in its
        slot).
        """
        self._write(self._saveStatements(_toRow(record)))

    def delete(self, slot: int) -> None:
        """
        Remove the record in C{slot} (if there is one).  The slot is not
        given out again until L{clear}.
        """
        self._write([(self._DELETE, (slot,))])

    def clear(self) -> None:
        """
        Remove every record and every meta value; slots start at 1 again.
        """
        self._write(list(self._CLEAR))

    def setMeta(self, **values: str | int | float) -> None:
        """
        Set meta values (stored as text; L{meta} gives them back as text).
        """
        self._write(self._metaStatements(values))

    def close(self) -> None:
        """
        Close the database.  Closing twice is harmless.
        """
        db, self._db = self._db, None
        if db is not None:
            db.close()


_STOP = object()


class TableWriter:
    """
    Writes to a L{Table} from one thread of its own, in the order asked.

    Every method returns at once with a L{Deferred} that fires in the
    reactor thread once that write is committed: with L{True}, or with
    L{False} when it failed.  A failed write is logged with the table's
    path and does not stop the writes after it.

    @ivar table: the table; only this writer's thread uses it.
    """

    log = Logger()

    def __init__(self, table: Table, reactor: Any = None) -> None:
        """
        Start the writer's thread.

        @param table: a table opened for writing; from now on only this
            writer uses it (and closes it in L{close}).
        @param reactor: the reactor the Deferreds fire in; L{None}: the
            global one.
        @raise TableError: C{table} was opened read-only.
        """
        if table.readonly:
            raise TableError(table.path, "a table opened read-only cannot be written")
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.table = table
        self.reactor = reactor
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing: defer.Deferred[None] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"keepalive-table {table.path}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            what, call, d = item
            try:
                call()
            except Exception:
                failure = Failure()
                self.reactor.callFromThread(self._failed, what, failure, d)
            else:
                self.reactor.callFromThread(d.callback, True)
        try:
            self.table.close()
        except Exception:
            failure = Failure()
            self.reactor.callFromThread(self._failed, "close", failure, None)
        self.reactor.callFromThread(self._closed)

    def _failed(self, what: str, failure: Failure, d: defer.Deferred[bool] | None) -> None:
        self.log.failure(
            "keepalive table {path}: {operation} failed",
            failure,
            path=self.table.path,
            operation=what,
        )
        if d is not None:
            d.callback(False)

    def _closed(self) -> None:
        assert self._closing is not None
        self._closing.callback(None)

    def _submit(self, what: str, call: Callable[[], None]) -> defer.Deferred[bool]:
        if self._closing is not None:
            raise TableError(self.table.path, f"{what} after the table writer was closed")
        d: defer.Deferred[bool] = defer.Deferred()
        self._queue.put((what, call, d))
        return d

    def save(self, record: Record) -> defer.Deferred[bool]:
        """
        Write C{record} as it is now: changes made to it after this call
        are not part of this write.
        """
        statements = Table._saveStatements(_toRow(record))
        return self._submit(f"save slot {record.slot}", lambda: self.table._write(statements))

    def delete(self, slot: int) -> defer.Deferred[bool]:
        """
        Remove the record in C{slot}.
        """
        return self._submit(f"delete slot {slot}", lambda: self.table.delete(slot))

    def clear(self) -> defer.Deferred[bool]:
        """
        Remove every record and meta value.
        """
        return self._submit("clear", self.table.clear)

    def setMeta(self, **values: str | int | float) -> defer.Deferred[bool]:
        """
        Set meta values.
        """
        statements = Table._metaStatements(values)
        return self._submit("set meta", lambda: self.table._write(statements))

    def flush(self) -> defer.Deferred[bool]:
        """
        A Deferred that fires (with L{True}) once everything asked before
        is committed (or has failed and been logged).
        """
        return self._submit("flush", lambda: None)

    def close(self) -> defer.Deferred[None]:
        """
        Finish the queued writes, close the table and end the thread.
        Closing twice gives the same result.
        """
        if self._closing is None:
            self._closing = defer.Deferred()
            self._queue.put(_STOP)
        done: defer.Deferred[None] = defer.Deferred()
        self._closing.addBoth(lambda result: (done.callback(None), result)[1])
        return done
