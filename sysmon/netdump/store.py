"""
What netdump keeps on disk.

Under the dump directory (default C{/var/crash})::

    <ip>-<YYYY-MM-DD-HH:MM>[.N]/   one per crash, mode 0700
        vmcore-incomplete          while dumping; renamed to vmcore when done
        vmcore                     ELF core (sysmon.netdump.elf)
        log                        console text of this boot and the crash
        dump.json                  machine-readable summary
        .netdump-session.json      restart journal: the session's parameters
        .netdump-pages             restart journal: one bit per page frame
        .netdump-reserved          restart journal: reserved pfn ranges
    console/<ip>.log               every console line a client ever sent
    console/<ip>.boot              where its current boot starts in <ip>.log
    magic/<ip>                     secure mode: the client's magic, 16 hex digits
    scripts/netdump-*              operator scripts

The restart journal makes a dump survive a server restart: page data is
written before its bit is set, and both live in the page cache the moment
they are written (the bitmap is a shared memory map), so a server killed with
SIGKILL loses nothing it had acknowledged to itself.  A finished dump is
fsynced before it is renamed to C{vmcore}.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import queue
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator

from twisted.internet import defer
from twisted.logger import Logger

from sysmon.netdump.elf import CoreLayout, buildHeader

__all__ = ["ConsoleLogs", "DumpStore", "Journal", "PageWriter", "Vmcore", "writeJSON"]

SESSION_FILE = ".netdump-session.json"
PAGES_FILE = ".netdump-pages"
RESERVED_FILE = ".netdump-reserved"
DUMP_INFO = "dump.json"


def writeJSON(path: str, data: dict[str, Any]) -> None:
    """
    Replace C{path} with C{data} as JSON, atomically (write, then rename).

    On a full file system, where the new copy cannot be written, an existing
    file is overwritten in place instead (it already owns its blocks), so a
    dump's final state still reaches dump.json.
    """
    text = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not os.path.exists(path):
            raise
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.pwrite(fd, text, 0) != len(text):
                raise
            os.ftruncate(fd, len(text))
        finally:
            os.close(fd)


class DumpStore:
    """
    The dump directory.

    @ivar root: its path.
    """

    log = Logger()

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def prepare(self) -> None:
        """
        Create the dump directory and its console/ if missing.

        @raise OSError: it cannot be created.
        """
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        os.makedirs(os.path.join(self.root, "console"), mode=0o755, exist_ok=True)

    def script(self, name: str) -> str:
        return os.path.join(self.root, "scripts", name)

    def magicFor(self, ip: str) -> int | None:
        """
        The magic stored for C{ip} in C{magic/<ip>}, or L{None}.
        """
        path = os.path.join(self.root, "magic", ip)
        try:
            with open(path, "rb") as f:
                text = f.read(64).strip()
        except FileNotFoundError:
            return None
        except OSError as e:
            self.log.warn("cannot read {path}: {error}", path=path, error=e.strerror)
            return None
        if text.lower().startswith(b"0x"):
            text = text[2:]
        try:
            if not 0 < len(text) <= 16:
                raise ValueError(text)
            return int(text, 16)
        except ValueError:
            self.log.warn(
                "{path} does not hold 16 hex digits; ignoring it", path=path
            )
            return None

    def freeBytes(self) -> int:
        """
        Bytes an unprivileged writer may still use under the dump directory.
        """
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def newCrashDir(self, ip: str, when: float) -> str:
        """
        Make C{<root>/<ip>-<YYYY-MM-DD-HH:MM>} (with C{.1}, C{.2}... when it
        exists), mode 0700, and return its path.
        """
        base = os.path.join(self.root, f"{ip}-{time.strftime('%Y-%m-%d-%H:%M', time.localtime(when))}")
        path, n = base, 0
        while True:
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                n += 1
                path = f"{base}.{n}"

    def journals(self) -> Iterator[str]:
        """
        Crash directories that hold a restart journal (dumps in progress
        when the server stopped).
        """
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.root, name)
            if os.path.isfile(os.path.join(path, SESSION_FILE)):
                yield path


class Journal:
    """
    The restart journal of one dump.

    @ivar path: the crash directory.
    @ivar state: the session parameters (a JSON object).
    @ivar done: number of page frames resolved (written or reserved).
    @ivar reserved: reserved C{[start, end)} pfn ranges.
    """

    def __init__(self, path: str, state: dict[str, Any]) -> None:
        self.path = path
        self.state = state
        self.done = 0
        self.reserved: list[tuple[int, int]] = []
        self._bits: mmap.mmap | None = None
        self._fd = -1
        self._reservedFile = None

    @classmethod
    def load(cls, path: str) -> Journal:
        """
        @raise ValueError: the journal is unreadable.
        """
        try:
            with open(os.path.join(path, SESSION_FILE)) as f:
                state = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: unreadable journal: {e}") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: unreadable journal")
        journal = cls(path, state)
        if state.get("nr_pages"):
            journal.openPages(int(state["nr_pages"]))
        try:
            with open(os.path.join(path, RESERVED_FILE)) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) == 2 and all(x.isdigit() for x in fields):
                        journal.reserved.append((int(fields[0]), int(fields[1])))
        except FileNotFoundError:
            pass
        return journal

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        writeJSON(os.path.join(self.path, SESSION_FILE), self.state)

    def openPages(self, nrPages: int) -> None:
        """
        Map the page bitmap (created zeroed if new).
        """
        size = max(1, (nrPages + 7) // 8)
        fd = os.open(os.path.join(self.path, PAGES_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            # Allocate the blocks now: a memory map over a full file system
            # would otherwise die with SIGBUS on its first write.
            os.posix_fallocate(fd, 0, size)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._bits = mmap.mmap(fd, size)
        self.done = int.from_bytes(self._bits[:], "little").bit_count()

    def isDone(self, pfn: int) -> bool:
        assert self._bits is not None
        return bool(self._bits[pfn >> 3] & (1 << (pfn & 7)))

    def markDone(self, pfn: int) -> bool:
        """
        Set C{pfn}'s bit; L{True} if it was not set.
        """
        bits = self._bits
        assert bits is not None
        i, mask = pfn >> 3, 1 << (pfn & 7)
        byte = bits[i]
        if byte & mask:
            return False
        bits[i] = byte | mask
        self.done += 1
        return True

    def markRange(self, start: int, end: int) -> int:
        """
        Set the bits of C{[start, end)}; return how many were newly set.
        """
        bits = self._bits
        assert bits is not None
        added = 0
        pfn = start
        while pfn < end and pfn & 7:
            added += self.markDone(pfn)
            pfn += 1
        whole = (end - pfn) >> 3
        if whole:
            first = pfn >> 3
            before = int.from_bytes(bits[first : first + whole], "little").bit_count()
            bits[first : first + whole] = b"\xff" * whole
            added += whole * 8 - before
            self.done += whole * 8 - before
            pfn += whole * 8
        while pfn < end:
            added += self.markDone(pfn)
            pfn += 1
        return added

    def nextMissing(self, pfn: int, limit: int) -> int:
        """
        The first pfn >= C{pfn} whose bit is clear, or C{limit}.
        """
        bits = self._bits
        assert bits is not None
        while pfn < limit:
            if pfn & 7 == 0:
                # Skip whole bytes of finished pages.
                i = pfn >> 3
                while i < len(bits) and bits[i] == 0xFF:
                    i += 1
                pfn = max(pfn, i << 3)
                if pfn >= limit:
                    break
            if not bits[pfn >> 3] & (1 << (pfn & 7)):
                return pfn
            pfn += 1
        return limit

    def addReserved(self, start: int, end: int) -> None:
        self.reserved.append((start, end))
        if self._reservedFile is None:
            self._reservedFile = open(os.path.join(self.path, RESERVED_FILE), "a")
        self._reservedFile.write(f"{start} {end}\n")
        self._reservedFile.flush()

    def close(self) -> None:
        if self._bits is not None:
            self._bits.close()
            self._bits = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._reservedFile is not None:
            self._reservedFile.close()
            self._reservedFile = None

    def remove(self) -> None:
        """
        Close and delete the journal (the dump is over).
        """
        self.close()
        for name in (PAGES_FILE, RESERVED_FILE, SESSION_FILE):
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass


class Vmcore:
    """
    The vmcore of one dump, written page by page at fixed offsets.

    @ivar path: the file being written (C{vmcore-incomplete}).
    @ivar layout: its L{CoreLayout}.
    """

    INCOMPLETE = "vmcore-incomplete"
    COMPLETE = "vmcore"

    def __init__(self, directory: str, layout: CoreLayout) -> None:
        self.directory = directory
        self.layout = layout
        self.path = os.path.join(directory, self.INCOMPLETE)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self.fd).st_size < layout.size:
            # Sparse: holes and zero pages take no space.
            os.ftruncate(self.fd, layout.size)

    def writeHeader(self, ramRanges: list[tuple[int, int]], registers: bytes,
                    taskStruct: int, pageOffset: int) -> None:
        header = buildHeader(self.layout, ramRanges, registers, taskStruct, pageOffset)
        os.pwrite(self.fd, header, 0)

    def writePages(self, pfn: int, pages: list[bytearray]) -> None:
        """
        Write consecutive pages starting at C{pfn} with one system call.

        @raise OSError: the write failed (ENOSPC...).
        """
        offset = self.layout.offsetOf(pfn)
        views = [memoryview(p) for p in pages]
        while views:
            written = os.pwritev(self.fd, views, offset)
            if written <= 0:
                raise OSError(28, "short write")
            offset += written
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    def sync(self) -> None:
        """
        fsync the file (blocking: call it from a thread).
        """
        os.fsync(self.fd)

    def complete(self) -> str:
        """
        Close and rename to C{vmcore}; return the new path.
        """
        self.close()
        final = os.path.join(self.directory, self.COMPLETE)
        os.replace(self.path, final)
        self.path = final
        return final

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ConsoleLogs:
    """
    Console text per client: C{console/<ip>.log}, and the crash
    directory's C{log} while a crash of that client is being handled.

    Writes go straight to the file descriptors (no user-space buffer), so a
    killed server loses no console text.
    """

    log = Logger()
    maxOpen = 128
    #: At most this much of the current boot's text is copied into a new
    #: crash directory's log.
    maxCopy = 32 * 1024 * 1024

    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "console")
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._crash: dict[str, int] = {}

    def _path(self, ip: str) -> str:
        return os.path.join(self.dir, f"{ip}.log")

    def _fd(self, ip: str) -> int:
        fd = self._fds.pop(ip, None)
        if fd is None:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(self._path(ip), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            while len(self._fds) >= self.maxOpen:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[ip] = fd
        return fd

    def append(self, ip: str, data: bytes) -> None:
        """
        Append console text from C{ip}.
        """
        if not data:
            return
        try:
            os.write(self._fd(ip), data)
        except OSError as e:
            self.log.error("cannot write console log of {ip}: {error}", ip=ip, error=e.strerror)
        crash = self._crash.get(ip)
        if crash is not None:
            try:
                os.write(crash, data)
            except OSError as e:
                self.log.error("cannot write crash log of {ip}: {error}", ip=ip, error=e.strerror)

    def markBoot(self, ip: str) -> None:
        """
        The client booted: its text from here on is its current boot's.
        """
        try:
            position = os.fstat(self._fd(ip)).st_size
            writeJSON(os.path.join(self.dir, f"{ip}.boot"), {"offset": position})
        except OSError as e:
            self.log.error("cannot mark boot of {ip}: {error}", ip=ip, error=e.strerror)

    def sinceBoot(self, ip: str) -> bytes:
        """
        The client's console text since its last boot (bounded).
        """
        try:
            with open(os.path.join(self.dir, f"{ip}.boot")) as f:
                start = int(json.load(f)["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            start = 0
        try:
            with open(self._path(ip), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(start, size - self.maxCopy))
                return f.read(self.maxCopy)
        except OSError:
            return b""

    def attachCrash(self, ip: str, directory: str, copyBoot: bool = True) -> None:
        """
        Start writing C{ip}'s text to C{<directory>/log} too, beginning with
        its text since boot (unless resuming, when it is already there).
        """
        self.detachCrash(ip)
        path = os.path.join(directory, "log")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as e:
            self.log.error("cannot open {path}: {error}", path=path, error=e.strerror)
            return
        self._crash[ip] = fd
        if copyBoot:
            try:
                os.write(fd, self.sinceBoot(ip))
            except OSError as e:
                self.log.error("cannot write {path}: {error}", path=path, error=e.strerror)

    def detachCrash(self, ip: str) -> None:
        fd = self._crash.pop(ip, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in list(self._fds.values()) + list(self._crash.values()):
            os.close(fd)
        self._fds.clear()
        self._crash.clear()


class PageWriter:
    """
    Writes vmcore pages in a dedicated thread, so that the reactor never
    waits for the disk (page-cache copies, dirty-page throttling) and the
    copy runs on another core.  Results come back in the reactor thread, in
    submission order.

    @ivar threaded: L{False} writes at once in the caller's thread (for
        tests on a fake reactor).
    """

    def __init__(self, reactor: Any, threaded: bool = True) -> None:
        self.reactor = reactor
        self.threaded = threaded
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: defer.Deferred[None] | None = None

    def submit(self, vmcore: Vmcore, pfn: int, pages: list[bytearray],
               done: Callable[[OSError | None], None]) -> None:
        """
        Write C{pages} at C{pfn} of C{vmcore}; call C{done(error)} in the
        reactor thread when it is on its way to disk (error: L{None} or the
        L{OSError}).
        """
        if not self.threaded:
            done(self._write(vmcore, pfn, pages))
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="netdump-writer", daemon=True)
            self._thread.start()
        self._queue.put((vmcore, pfn, pages, done))

    @staticmethod
    def _write(vmcore: Vmcore, pfn: int, pages: list[bytearray]) -> OSError | None:
        try:
            vmcore.writePages(pfn, pages)
        except OSError as e:
            return e
        return None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self.reactor.callFromThread(self._finished)
                return
            vmcore, pfn, pages, done = item
            self.reactor.callFromThread(done, self._write(vmcore, pfn, pages))

    def _finished(self) -> None:
        self._thread = None
        if self._stopped is not None:
            d, self._stopped = self._stopped, None
            d.callback(None)

    def stop(self) -> defer.Deferred[None]:
        """
        Finish the writes already submitted (their C{done} runs first) and
        end the thread.
        """
        if self._thread is None:
            return defer.succeed(None)
        self._stopped = defer.Deferred()
        self._queue.put(None)
        return self._stopped
