"""
Tests for L{sysmon.keepalive.table}: the monitored process table in SQLite
(persistence, slots, meta, the read-only view C{spawndaemon -L} uses, files
that are not a table) and L{TableWriter}, which commits in a thread of its
own.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading

import attrs
from twisted.internet import defer
from twisted.logger import Logger, formatEvent
from twisted.python import threadable
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sysmon.keepalive.config import ProcessConfig
from sysmon.keepalive.errors import KeepaliveError
from sysmon.keepalive.policy import Policy, State
from sysmon.keepalive.table import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Record,
    Table,
    TableError,
    TableWriter,
)

CONFIG = ProcessConfig(
    path="/usr/sbin/d",
    args=("-f", "two words"),
    user="daemon",
    group="daemon",
    cwd="/var/lib/d",
    env={"LANG": "C"},
    restartScript="/etc/keepalive.d/re-d",
    policy=Policy(errorLimit=3, probation=60.0, respawnTime=0.5, termWait=4.0),
    pidfile="/run/d.pid",
    source="/etc/keepalive.d/d.cfg",
)


def fullRecord(slot: int = 3) -> Record:
    """
    A record with every field away from its default.
    """
    return Record(
        slot=slot,
        config=CONFIG,
        group="web",
        critical=True,
        state=State.RESPAWN,
        pid=4242,
        startTime=123456789,
        child=True,
        matchArgs=True,
        downCode=7,
        rejectCode=8,
        daemonizes=True,
        registered=1700000000.25,
        started=1700000100.5,
        firstDied=1700000050.125,
        lastDied=1700000099.75,
        failures=(1700000050.125, 1700000099.75),
        restarts=5,
        logPath="/var/log/keepalive/d.4242",
        lastExit="killed by SIGKILL",
        spawned=True,
    )


def plain(slot: int, pid: int = 0) -> Record:
    return Record(slot=slot, config=ProcessConfig("/bin/sleep", ("100",)), pid=pid)


class _TableDir:
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "keepalive.data")

    def open(self, **kw) -> Table:
        table = Table(self.path, **kw)
        self.addCleanup(table.close)
        return table


class TableTests(_TableDir, SynchronousTestCase):
    """
    L{Table}: records, slots and meta values.
    """

    def test_everyFieldPersists(self):
        """
        Every field of a record, the config with its policy included, is
        the same after closing and opening the table again.
        """
        table = self.open()
        record = fullRecord()
        table.save(record)
        table.close()
        [back] = self.open().load()
        self.assertEqual(back, record)
        for field in attrs.fields(Record):
            self.assertEqual(getattr(back, field.name), getattr(record, field.name), field.name)
        self.assertIs(type(back.state), State)
        self.assertIsInstance(back.failures, tuple)

    def test_defaultsPersist(self):
        """
        A record with default fields (no group, no codes, no log) comes back
        equal, L{None}s and empty values included.
        """
        table = self.open()
        record = Record(slot=1, config=ProcessConfig("/bin/true"))
        table.save(record)
        table.close()
        self.assertEqual(self.open().load(), [record])

    def test_everyState(self):
        """
        Every state is stored as its text value and read back as the enum.
        """
        table = self.open()
        for slot, state in enumerate(State, 1):
            table.save(attrs.evolve(plain(slot), state=state))
        self.assertEqual([r.state for r in table.load()], list(State))
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(
            [row[0] for row in db.execute("SELECT state FROM process ORDER BY slot")],
            [s.value for s in State],
        )

    def test_loadOrderedBySlot(self):
        """
        Records come back ordered by slot, whatever the order they were
        saved in.
        """
        table = self.open()
        for slot in (5, 2, 9, 1):
            table.save(plain(slot))
        self.assertEqual([r.slot for r in table.load()], [1, 2, 5, 9])

    def test_saveReplacesSlot(self):
        """
        Saving a record whose slot is in the table replaces that row.
        """
        table = self.open()
        table.save(plain(1, pid=10))
        table.save(plain(1, pid=20))
        self.assertEqual([(r.slot, r.pid) for r in table.load()], [(1, 20)])

    def test_delete(self):
        """
        C{delete} removes that slot's record only; deleting an empty slot
        is harmless.
        """
        table = self.open()
        table.save(plain(1))
        table.save(plain(2))
        table.delete(1)
        table.delete(77)
        self.assertEqual([r.slot for r in table.load()], [2])

    def test_nextSlotStartsAtOne(self):
        """
        A new table's first slot is 1.
        """
        self.assertEqual(self.open().nextSlot(), 1)

    def test_nextSlotNotReused(self):
        """
        The next slot is one above the highest slot ever saved: deleting
        the highest record (or all of them) does not give its slot out
        again, not even after the table is closed and opened again.
        """
        table = self.open()
        for slot in (1, 2, 3):
            table.save(plain(slot))
        self.assertEqual(table.nextSlot(), 4)
        table.delete(3)
        self.assertEqual(table.nextSlot(), 4)
        table.delete(1)
        table.delete(2)
        self.assertEqual(table.nextSlot(), 4)
        table.close()
        self.assertEqual(self.open().nextSlot(), 4)

    def test_nextSlotAfterGap(self):
        """
        A record saved in a high slot moves the next slot past it.
        """
        table = self.open()
        table.save(plain(7))
        self.assertEqual(table.nextSlot(), 8)
        table.save(plain(2))
        self.assertEqual(table.nextSlot(), 8)

    def test_nextSlotDoesNotReserve(self):
        """
        Asking twice without saving gives the same slot (the caller saves
        or counts on from it).
        """
        table = self.open()
        self.assertEqual((table.nextSlot(), table.nextSlot()), (1, 1))

    def test_clear(self):
        """
        C{clear} removes every record and meta value, and slots start at 1
        again.
        """
        table = self.open()
        table.save(plain(1))
        table.save(plain(2))
        table.setMeta(pid=5)
        table.clear()
        self.assertEqual(table.load(), [])
        self.assertEqual(table.meta(), {})
        self.assertEqual(table.nextSlot(), 1)
        table.close()
        reopened = self.open()
        self.assertEqual((reopened.load(), reopened.meta(), reopened.nextSlot()), ([], {}, 1))

    def test_meta(self):
        """
        Meta values are stored as text, replaced by a later value, and kept
        across a reopen; other types are refused.
        """
        table = self.open()
        table.setMeta(pid=123, started=1700000000.5, control="/run/keepalive/keepalivecfg")
        table.setMeta(pid=124)
        expected = {
            "pid": "124",
            "started": "1700000000.5",
            "control": "/run/keepalive/keepalivecfg",
        }
        self.assertEqual(table.meta(), expected)
        table.close()
        self.assertEqual(self.open().meta(), expected)
        self.assertRaises(TypeError, self.open().setMeta, pid=None)

    def test_closed(self):
        """
        Using a closed table raises L{TableError}; closing twice is
        harmless.
        """
        table = self.open()
        table.close()
        table.close()
        self.assertRaises(TableError, table.load)
        self.assertRaises(TableError, table.save, plain(1))


class FileTests(_TableDir, SynchronousTestCase):
    """
    The table file: where and how it is created, and files that are not a
    keepalive table.
    """

    def test_createsDirectoryAndFilePrivate(self):
        """
        A missing parent directory is created 0700 and the file 0600, and
        SQLite's -wal and -shm files get 0600 as well, whatever the umask.
        """
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        path = os.path.join(self.dir, "new", "sub", "k.data")
        table = Table(path)
        self.addCleanup(table.close)
        table.save(plain(1))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        for name in (path, path + "-wal", path + "-shm"):
            self.assertEqual(stat.S_IMODE(os.stat(name).st_mode), 0o600, name)

    def test_existingDirectoryKept(self):
        """
        An existing directory (the script directory, 0755) keeps its mode.
        """
        os.chmod(self.dir, 0o755)
        self.open()
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode), 0o755)

    def test_walAndVersion(self):
        """
        The database uses WAL and carries keepalive's application id and
        the schema version.
        """
        self.open().close()
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        self.assertEqual(db.execute("PRAGMA application_id").fetchone()[0], APPLICATION_ID)

    def assertRefused(self, message: str, **kw) -> TableError:
        with self.assertRaises(TableError) as caught:
            Table(self.path, **kw)
        self.assertIn(self.path, str(caught.exception))
        self.assertIn(message, str(caught.exception))
        self.assertIsInstance(caught.exception, KeepaliveError)
        self.assertEqual(caught.exception.path, self.path)
        return caught.exception

    def test_textFile(self):
        """
        A text file at the path is refused, read-write or read-only, and is
        left as it was.
        """
        text = "not a database\n" * 200
        with open(self.path, "w") as f:
            f.write(text)
        self.assertRefused("not a keepalive table")
        self.assertRefused("not a keepalive table", readonly=True)
        with open(self.path) as f:
            self.assertEqual(f.read(), text)

    def test_otherDatabase(self):
        """
        Another program's SQLite database is refused and left alone.
        """
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE mine (x)")
        db.commit()
        db.close()
        self.assertRefused("another program's SQLite database")
        self.assertRefused("another program's SQLite database", readonly=True)
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
        self.assertEqual(tables, ["mine"])

    def test_newerSchema(self):
        """
        A table written by a newer keepalive (higher schema version) is
        refused, naming both versions.
        """
        self.open().close()
        db = sqlite3.connect(self.path)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
        error = self.assertRefused(f"schema version {SCHEMA_VERSION + 1}")
        self.assertIn("newer keepalive", str(error))
        self.assertRefused("newer keepalive", readonly=True)

    def test_directory(self):
        """
        A directory at the path is refused, read-write or read-only.
        """
        os.makedirs(self.path)
        self.assertRefused("is a directory")
        self.assertRefused("is a directory", readonly=True)

    def test_parentIsFile(self):
        """
        A parent "directory" that is a file is refused with the reason.
        """
        with open(os.path.join(self.dir, "file"), "w"):
            pass
        self.path = os.path.join(self.dir, "file", "k.data")
        self.assertRefused(f"{self.dir}/file is not a directory")
        self.path = os.path.join(self.dir, "file", "deeper", "k.data")
        self.assertRefused("Not a directory")

    def test_damagedRow(self):
        """
        A row whose config is not a config's JSON makes C{load} raise
        L{TableError} naming the path and the slot.
        """
        table = self.open()
        table.save(plain(4))
        db = sqlite3.connect(self.path)
        db.execute("UPDATE process SET config = 'garbage' WHERE slot = 4")
        db.commit()
        db.close()
        with self.assertRaises(TableError) as caught:
            table.load()
        self.assertIn(self.path, str(caught.exception))
        self.assertIn("slot 4", str(caught.exception))


class ReadonlyTests(_TableDir, SynchronousTestCase):
    """
    The read-only view (C{spawndaemon -L}).
    """

    def test_missing(self):
        """
        A missing table gives the message that keepalive never ran with it,
        and creates nothing.
        """
        with self.assertRaises(TableError) as caught:
            Table(self.path, readonly=True)
        self.assertEqual(
            str(caught.exception),
            f"no table at {self.path} (keepalive has never run with it)",
        )
        self.assertEqual(os.listdir(self.dir), [])

    def test_seesCommitsOfOpenWriter(self):
        """
        A reader opened while the writer is open sees what the writer
        commits afterwards, without either closing.
        """
        writer = self.open()
        writer.save(plain(1, pid=11))
        reader = self.open(readonly=True)
        self.assertEqual([(r.slot, r.pid) for r in reader.load()], [(1, 11)])
        writer.save(plain(2, pid=22))
        writer.save(plain(1, pid=12))
        writer.setMeta(pid=99)
        self.assertEqual([(r.slot, r.pid) for r in reader.load()], [(1, 12), (2, 22)])
        self.assertEqual(reader.meta(), {"pid": "99"})
        self.assertEqual(reader.nextSlot(), 3)

    def test_afterWriterClosed(self):
        """
        A reader opened after the writer closed (its -wal file gone) reads
        the table.
        """
        writer = Table(self.path)
        writer.save(fullRecord())
        writer.close()
        self.assertFalse(os.path.exists(self.path + "-wal"))
        self.assertEqual(self.open(readonly=True).load(), [fullRecord()])

    def test_refusesWrites(self):
        """
        A read-only table refuses every write with L{TableError}.
        """
        self.open().close()
        reader = self.open(readonly=True)
        for call, args in [
            (reader.save, (plain(1),)),
            (reader.delete, (1,)),
            (reader.clear, ()),
        ]:
            self.assertRaises(TableError, call, *args)
        self.assertRaises(TableError, reader.setMeta, x=1)

    def test_emptyFile(self):
        """
        An empty file is not a table for a reader (a writer would make it
        one).
        """
        with open(self.path, "w"):
            pass
        with self.assertRaises(TableError) as caught:
            Table(self.path, readonly=True)
        self.assertIn("not a keepalive table", str(caught.exception))

    def unprivileged(self, code: str) -> subprocess.CompletedProcess:
        """
        Run C{code} (with the table path as C{PATH_}) as the user nobody.
        """
        if os.getuid() != 0 or shutil.which("setpriv") is None:
            raise SkipTest("needs root and setpriv to read as another user")
        for d in (self.dir, os.path.dirname(self.dir)):
            os.chmod(d, 0o755)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        program = f"import sys\nsys.path.insert(0, {root!r})\nPATH_ = {self.path!r}\n" + code
        return subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", program],
            capture_output=True, text=True, timeout=60,
        )

    def test_readerWithoutWriteAccess(self):
        """
        A reader that may read the file but not create files beside it
        (SQLite's -shm) still reads a table no keepalive has open, and one
        that a keepalive has open.
        """
        writer = Table(self.path)
        writer.save(plain(1))
        writer.close()
        os.chmod(self.path, 0o644)
        code = (
            "from sysmon.keepalive.table import Table\n"
            "print([r.slot for r in Table(PATH_, readonly=True).load()])\n"
        )
        result = self.unprivileged(code)
        self.assertEqual((result.stdout, result.returncode), ("[1]\n", 0), result.stderr)
        writer = self.open()
        writer.save(plain(2))
        for name in (self.path + "-wal", self.path + "-shm"):
            os.chmod(name, 0o644)
        result = self.unprivileged(code)
        self.assertEqual((result.stdout, result.returncode), ("[1, 2]\n", 0), result.stderr)

    def test_unreadable(self):
        """
        A file the reader may not read gives L{TableError} naming it.
        """
        self.open().close()
        os.chmod(self.path, 0o600)
        result = self.unprivileged(
            "from sysmon.keepalive.table import Table, TableError\n"
            "try:\n    Table(PATH_, readonly=True)\n"
            "except TableError as e:\n    print(e)\n"
        )
        self.assertEqual(
            result.stdout, f"table {self.path}: cannot read: Permission denied\n", result.stderr
        )


class WriterTests(_TableDir, TestCase):
    """
    L{TableWriter} with the real reactor: its commits run in a thread of
    its own.
    """

    def setUp(self) -> None:
        super().setUp()
        self.table = Table(self.path)
        self.writer = TableWriter(self.table)
        self.addCleanup(self.writer.close)
        self.events: list[dict] = []
        self.writer.log = Logger(observer=self.events.append)

    def reader(self) -> Table:
        return self.open(readonly=True)

    @defer.inlineCallbacks
    def test_inOrder(self):
        """
        Writes are committed in the order asked, and their Deferreds fire
        in that order, in the reactor thread, with L{True}.
        """
        fired = []
        ds = []
        for i, call in enumerate([
            lambda: self.writer.save(plain(1, pid=1)),
            lambda: self.writer.save(plain(2, pid=2)),
            lambda: self.writer.delete(1),
            lambda: self.writer.save(plain(1, pid=3)),
            lambda: self.writer.setMeta(pid=1),
            lambda: self.writer.clear(),
            lambda: self.writer.save(plain(5, pid=5)),
            lambda: self.writer.setMeta(pid=2),
        ]):
            d = call()
            d.addCallback(
                lambda result, i=i: fired.append((i, result, threadable.isInIOThread()))
            )
            ds.append(d)
        yield defer.gatherResults(ds)
        self.assertEqual(fired, [(i, True, True) for i in range(8)])
        reader = self.reader()
        self.assertEqual([(r.slot, r.pid) for r in reader.load()], [(5, 5)])
        self.assertEqual(reader.meta(), {"pid": "2"})
        self.assertEqual(reader.nextSlot(), 6)

    @defer.inlineCallbacks
    def test_manyInOrder(self):
        """
        Two hundred saves of the same slot leave the last one written.
        """
        for pid in range(1, 201):
            self.writer.save(plain(1, pid=pid))
        yield self.writer.flush()
        self.assertEqual([r.pid for r in self.reader().load()], [200])

    @defer.inlineCallbacks
    def test_snapshotAtCall(self):
        """
        A save writes the record as it was when C{save} was called: later
        changes to it are not written until it is saved again.
        """
        record = fullRecord()
        expected = attrs.evolve(record)
        d = self.writer.save(record)
        record.pid = 1
        record.state = State.DOWN
        record.failures = record.failures + (5.0,)
        record.config = ProcessConfig("/bin/other")
        record.restarts += 1
        yield d
        self.assertEqual(self.reader().load(), [expected])
        yield self.writer.save(record)
        self.assertEqual(self.reader().load(), [record])

    @defer.inlineCallbacks
    def test_flushWaitsForQueuedWrites(self):
        """
        While another connection holds the database's write lock, C{save}
        returns at once (the reactor does not wait), and C{flush} fires only
        once every write queued before it is committed.
        """
        blocker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")
        saves = [self.writer.save(plain(slot)) for slot in range(1, 51)]
        flushed = self.writer.flush()
        seen = []
        flushed.addCallback(lambda _: seen.append(len(self.reader().load())))
        self.assertFalse(any(d.called for d in saves))
        self.assertFalse(flushed.called)
        blocker.execute("COMMIT")
        yield flushed
        self.assertEqual(seen, [50])

    @defer.inlineCallbacks
    def test_errorDoesNotStopLaterWrites(self):
        """
        A write that fails fires its Deferred with L{False} and is logged
        with the table's path; the writes after it go on.
        """
        db = sqlite3.connect(self.path)
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON process WHEN NEW.slot = 13 "
            "BEGIN SELECT RAISE(ABORT, 'slot 13 refused by the test'); END"
        )
        db.commit()
        db.close()
        before = self.writer.save(plain(12))
        failed = self.writer.save(plain(13))
        after = self.writer.save(plain(14))
        meta = self.writer.setMeta(pid=7)
        results = yield defer.gatherResults([before, failed, after, meta])
        self.assertEqual(results, [True, False, True, True])
        reader = self.reader()
        self.assertEqual([r.slot for r in reader.load()], [12, 14])
        self.assertEqual(reader.meta(), {"pid": "7"})
        [event] = self.events
        self.assertEqual(event["path"], self.path)
        self.assertIn(self.path, formatEvent(event))
        self.assertIn("save slot 13", formatEvent(event))
        self.assertIn("slot 13 refused by the test", str(event["log_failure"].value))

    @defer.inlineCallbacks
    def test_close(self):
        """
        C{close} fires after the queued writes are committed, closes the
        table and ends the thread; later writes are refused; closing again
        fires too.
        """
        self.writer.save(plain(1))
        self.writer.save(plain(2))
        yield self.writer.close()
        self.assertEqual(len(self.reader().load()), 2)
        self.assertRaises(TableError, self.table.load)
        self.writer._thread.join(10)
        self.assertFalse(self.writer._thread.is_alive())
        self.assertRaises(TableError, self.writer.save, plain(3))
        self.assertRaises(TableError, self.writer.flush)
        yield self.writer.close()

    @defer.inlineCallbacks
    def test_writesOutsideReactorThread(self):
        """
        The commits run in one thread that is not the reactor's, the same
        thread for every write.
        """
        threads = set()
        original = self.table._write

        def recording(statements):
            threads.add(threading.current_thread())
            return original(statements)

        self.table._write = recording
        for slot in (1, 2, 3):
            self.writer.save(plain(slot))
        self.writer.delete(2)
        self.writer.clear()
        yield self.writer.flush()
        self.assertEqual(len(threads), 1)
        self.assertNotIn(threading.main_thread(), threads)


class WriterConstructionTests(_TableDir, SynchronousTestCase):
    """
    What L{TableWriter} accepts.
    """

    def test_readonlyRefused(self):
        """
        A writer over a read-only table is refused at once, naming the path.
        """
        self.open().close()
        with self.assertRaises(TableError) as caught:
            TableWriter(self.open(readonly=True))
        self.assertIn(self.path, str(caught.exception))
