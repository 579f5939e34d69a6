"""
A path whose C{stat()} blocks, as one on a hung NFS server does: a tiny FUSE
file system that speaks the kernel's FUSE protocol on C{/dev/fuse} itself (no
libfuse, no extra package) and never answers the lookup of one name.

For tests and benchmarks (the watchdog's C{file} check must survive a path
whose C{stat} never returns).  L{HangingMount} starts the server as a child
process (C{python -m sysmon.hangfs serve MOUNTPOINT ...}); the server opens
C{/dev/fuse}, mounts it with C{mount(2)} and answers:

  - C{INIT}: protocol 7.x, at most 7.31, with parallel directory operations
    (so other names stay answerable while one lookup hangs) and no other
    optional features;
  - C{GETATTR} and C{STATFS} of the root, a directory (C{ls} works too:
    C{OPENDIR}/C{READDIR}/C{RELEASEDIR} give an empty directory);
  - C{LOOKUP} of C{.pending}: a read-only file whose size is the number of
    C{hang} lookups the server holds unanswered (L{HangingMount.pending});
  - C{LOOKUP} of any other name but C{hang}: C{ENOENT};
  - C{LOOKUP} of C{hang}: never (C{stat} blocks until the connection is
    aborted).  C{INTERRUPT} is ignored, so a signal does not free the caller,
    like a hard NFS mount; with C{interruptible=True} the server answers the
    interrupted lookup with C{EINTR} instead (a killable C{hard} mount);
  - C{DESTROY}; C{FORGET}s get no reply; anything else C{ENOSYS}.

A request the server has read but not answered keeps its caller in
uninterruptible sleep (state D, even after C{SIGKILL}) until the connection
is aborted, so nothing may be left running: L{HangingMount.stop} aborts the
connection, detaches the mount and ends the server; an exit hook stops every
mount still started when the interpreter exits (before it joins non-daemon
threads, which a thread stuck here would block); and the server watches
its parent and, once it has exited (even if killed, even if one of its
threads is stuck here), closes C{/dev/fuse} (which aborts the connection and
frees stuck callers), detaches the mount and exits.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import errno
import os
import select
import selectors
import signal
import stat as _stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, NamedTuple, Sequence

from twisted.logger import Logger

from sysmon import processes

__all__ = [
    "HangFSError",
    "FuseUnavailable",
    "HangingMount",
    "MountEntry",
    "mountEntries",
    "HANG_NAME",
    "PENDING_NAME",
    "FSTYPE",
]

log = Logger()

HANG_NAME = "hang"
"""The one name whose lookup never gets an answer."""

PENDING_NAME = ".pending"
"""A file whose size is the number of C{hang} lookups held unanswered."""

FSTYPE = "fuse.hangfs"
"""The file system type the mount shows in C{/proc/self/mountinfo}."""

SOURCE = "hangfs"

# --- wire (linux/fuse.h) -----------------------------------------------------

FUSE_KERNEL_VERSION = 7
OUR_MINOR = 31
"""Newest minor version we claim; the 7.9+ layouts of every struct we send."""
OLDEST_MINOR = 12

FUSE_ROOT_ID = 1
PENDING_ID = 2

FUSE_PARALLEL_DIROPS = 1 << 18
"""Init flag: without it the kernel runs one lookup at a time per directory,
so the stuck lookup of C{hang} would block the lookup of every other name."""

FUSE_LOOKUP = 1
FUSE_FORGET = 2
FUSE_GETATTR = 3
FUSE_STATFS = 17
FUSE_INIT = 26
FUSE_OPENDIR = 27
FUSE_READDIR = 28
FUSE_RELEASEDIR = 29
FUSE_ACCESS = 34
FUSE_INTERRUPT = 36
FUSE_DESTROY = 38
FUSE_BATCH_FORGET = 42

NO_REPLY = frozenset({FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT})

IN_HEADER = struct.Struct("=IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("=IiQ")  # len error unique
INIT_IN = struct.Struct("=IIII")  # major minor max_readahead flags (flags2... follow)
INIT_OUT = struct.Struct("=IIIIHHIIHHI28x")
ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
ATTR_OUT = struct.Struct("=QII")  # attr_valid attr_valid_nsec dummy, then ATTR
ENTRY_OUT = struct.Struct("=QQQQII")  # nodeid generation entry_valid attr_valid nsecs, ATTR
KSTATFS = struct.Struct("=QQQQQIIII24x")
OPEN_OUT = struct.Struct("=QII")
INTERRUPT_IN = struct.Struct("=Q")

assert IN_HEADER.size == 40 and OUT_HEADER.size == 16
assert INIT_OUT.size == 64 and ATTR.size == 88 and KSTATFS.size == 80
assert ENTRY_OUT.size + ATTR.size == 128

READ_BUFFER = (1 << 20) + 4096
"""Bigger than any request the kernel may send with our C{max_write}."""

MS_NOSUID = 2
MS_NODEV = 4
MNT_FORCE = 1
MNT_DETACH = 2

_UNAVAILABLE_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EPERM, errno.EACCES, errno.EROFS}
)


class HangFSError(RuntimeError):
    """
    The hanging mount could not be set up (server died, no answer in time).
    """


class FuseUnavailable(HangFSError):
    """
    FUSE cannot be used here (no C{/dev/fuse}, not root, mount refused):
    callers skip with C{reason}.

    @ivar reason: what is missing, for a skip message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- mountinfo -----------------------------------------------------------------


class MountEntry(NamedTuple):
    """
    One line of C{/proc/self/mountinfo}.

    @ivar mountId: the mount's id (first field).
    @ivar major: major device number of the file system.
    @ivar minor: minor device number.
    @ivar mountPoint: where it is mounted (escapes undone).
    @ivar fstype: file system type, e.g. C{fuse.hangfs}.
    @ivar source: mount source.
    """

    mountId: int
    major: int
    minor: int
    mountPoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo.
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and len(field) >= i + 4 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parseMountinfo(text: str) -> list[MountEntry]:
    """
    Parse the text of a C{/proc/<pid>/mountinfo} file.

    @param text: the file's contents.
    @return: the entries in file order (oldest mount first); malformed lines
        are left out.
    """
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            major, minor = fields[2].split(":")
            entries.append(
                MountEntry(
                    int(fields[0]),
                    int(major),
                    int(minor),
                    _unescape(fields[4]),
                    fields[dash + 1],
                    _unescape(fields[dash + 2]),
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


def mountEntries(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """
    Read the mount table (never touches the mounted file systems, so it
    cannot block on a hung one).

    @param path: the mountinfo file.
    @return: see L{parseMountinfo}.
    """
    with open(path) as f:
        return parseMountinfo(f.read())


def _ourMount(mountpoint: str, mountId: int | None = None) -> MountEntry | None:
    found = None
    for entry in mountEntries():
        if entry.mountPoint != mountpoint or entry.fstype != FSTYPE:
            continue
        if mountId is None or entry.mountId == mountId:
            found = entry  # the last one is the top of a stack
    return found


# --- syscalls --------------------------------------------------------------------

_libc = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return _libc


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _lib().mount(source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode()):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _umount2(target: str, flags: int) -> None:
    if _lib().umount2(os.fsencode(target), flags):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


# --- the server (child process) ----------------------------------------------------


def _parentGone(parentPid: int) -> bool:
    """
    Whether the process that started us has exited: we were re-parented, or
    its main thread is a zombie (it exited while another of its threads is
    stuck in one of our requests, which only we can free).
    """
    if os.getppid() != parentPid:
        return True
    return processes.state(parentPid) in (None, "Z", "X", "x")


class _Server:
    """
    The file system: reads requests from C{/dev/fuse} and answers them.
    """

    def __init__(self, fd: int, parentPid: int, interruptible: bool) -> None:
        self.fd = fd
        self.parentPid = parentPid
        self.interruptible = interruptible
        self.hung: set[int] = set()
        self.started = int(time.time())
        self.initialized = False
        self.onInit = lambda: None

    def reply(self, unique: int, error: int = 0, payload: bytes = b"") -> bool:
        """
        Answer request C{unique}; L{False} when the connection is gone.
        """
        data = OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload
        try:
            os.write(self.fd, data)
        except OSError as e:
            if e.errno == errno.ENODEV:
                return False
            # ENOENT: the request was interrupted or aborted meanwhile.
        return True

    def rootAttr(self) -> bytes:
        t = self.started
        return ATTR.pack(
            FUSE_ROOT_ID, 0, 0, t, t, t, 0, 0, 0, _stat.S_IFDIR | 0o755, 2, 0, 0, 0, 4096, 0
        )

    def pendingAttr(self) -> bytes:
        t = self.started
        size = len(self.hung)
        return ATTR.pack(
            PENDING_ID, size, 0, t, t, t, 0, 0, 0, _stat.S_IFREG | 0o444, 1, 0, 0, 0, 4096, 0
        )

    def handle(self, request: bytes) -> bool:
        """
        Handle one request.

        @return: L{False} when the server should stop.
        """
        if len(request) < IN_HEADER.size:
            return True
        length, opcode, unique, nodeid = IN_HEADER.unpack_from(request)[:4]
        body = request[IN_HEADER.size : length]
        if opcode in NO_REPLY:
            if opcode == FUSE_INTERRUPT and self.interruptible and len(body) >= 8:
                (target,) = INTERRUPT_IN.unpack_from(body)
                if target in self.hung:
                    self.hung.discard(target)
                    return self.reply(target, errno.EINTR)
            return True
        if opcode == FUSE_INIT:
            return self.init(unique, body)
        if opcode == FUSE_DESTROY:
            self.reply(unique)
            return False
        if opcode == FUSE_LOOKUP:
            name = body.split(b"\0", 1)[0]
            if nodeid == FUSE_ROOT_ID and name == HANG_NAME.encode():
                self.hung.add(unique)  # never answered
                return True
            if nodeid == FUSE_ROOT_ID and name == PENDING_NAME.encode():
                # No caching (valid 0 s): every stat asks us again.
                entry = ENTRY_OUT.pack(PENDING_ID, 0, 0, 0, 0, 0) + self.pendingAttr()
                return self.reply(unique, 0, entry)
            return self.reply(unique, errno.ENOENT)
        if nodeid == PENDING_ID and opcode == FUSE_GETATTR:
            return self.reply(unique, 0, ATTR_OUT.pack(0, 0, 0) + self.pendingAttr())
        if nodeid != FUSE_ROOT_ID:
            return self.reply(unique, errno.ENOENT)
        if opcode == FUSE_GETATTR:
            return self.reply(unique, 0, ATTR_OUT.pack(1, 0, 0) + self.rootAttr())
        if opcode == FUSE_STATFS:
            return self.reply(unique, 0, KSTATFS.pack(0, 0, 0, 0, 0, 4096, 255, 4096, 0))
        if opcode == FUSE_OPENDIR:
            return self.reply(unique, 0, OPEN_OUT.pack(0, 0, 0))
        if opcode in (FUSE_READDIR, FUSE_RELEASEDIR, FUSE_ACCESS):
            return self.reply(unique)
        return self.reply(unique, errno.ENOSYS)

    def init(self, unique: int, body: bytes) -> bool:
        if len(body) < INIT_IN.size:
            return self.reply(unique, errno.EINVAL)
        major, minor, maxReadahead, flags = INIT_IN.unpack_from(body)
        if major > FUSE_KERNEL_VERSION:
            # The kernel then asks again with our major.
            return self.reply(unique, 0, INIT_OUT.pack(FUSE_KERNEL_VERSION, 0, *([0] * 9)))
        if major < FUSE_KERNEL_VERSION or minor < OLDEST_MINOR:
            self.reply(unique, errno.EPROTO)
            raise _Unavailable(f"kernel FUSE protocol {major}.{minor} is too old")
        out = INIT_OUT.pack(
            FUSE_KERNEL_VERSION,
            min(minor, OUR_MINOR),
            maxReadahead,
            flags & FUSE_PARALLEL_DIROPS,  # the one optional feature we want
            0,  # max_background: kernel default
            0,  # congestion_threshold: kernel default
            4096,  # max_write
            1,  # time_gran
            0,  # max_pages (FUSE_MAX_PAGES not asked for)
            0,  # map_alignment
            0,  # flags2
        )
        if not self.reply(unique, 0, out):
            return False
        self.initialized = True
        self.onInit()
        return True

    def run(self) -> None:
        buf = bytearray(READ_BUFFER)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            if _parentGone(self.parentPid):
                return
            if not poller.poll(250):
                continue
            try:
                n = os.readv(self.fd, [buf])
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EAGAIN):
                    continue
                if e.errno == errno.ENODEV:  # aborted or unmounted
                    return
                raise
            if not self.handle(bytes(buf[:n])):
                return


class _Unavailable(Exception):
    pass


def _say(line: str) -> None:
    try:
        sys.stdout.write(line.replace("\n", " ") + "\n")
        sys.stdout.flush()
    except OSError:
        pass


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(
    mountpoint: str, parentPid: int, interruptible: bool = False, device: str = "/dev/fuse"
) -> int:
    """
    Mount the hanging file system on C{mountpoint} and serve it until the
    connection ends, C{SIGTERM}, or process C{parentPid} exits; then release
    the device and detach the mount.  Reports on standard output one line:
    C{ready MOUNTID MAJOR:MINOR}, C{unavailable REASON} or C{error REASON}.

    @param mountpoint: absolute path of an existing directory.
    @param parentPid: the process whose exit ends the server.
    @param interruptible: answer an interrupted C{hang} lookup with C{EINTR}.
    @param device: the FUSE device.
    @return: exit status.
    """
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    fd = -1
    entry = None
    try:
        try:
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            kind = "unavailable" if e.errno in _UNAVAILABLE_ERRNOS else "error"
            _say(f"{kind} cannot open {device}: {e.strerror}")
            return 1
        data = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other"
        try:
            _mount(SOURCE, mountpoint, FSTYPE, MS_NOSUID | MS_NODEV, data)
        except OSError as e:
            kind = "unavailable" if e.errno in _UNAVAILABLE_ERRNOS else "error"
            _say(f"{kind} mount of FUSE refused: {e.strerror}")
            return 1
        entry = _ourMount(mountpoint)
        if entry is None:
            _say(f"error mounted, but {mountpoint} is not in /proc/self/mountinfo")
            return 1
        server = _Server(fd, parentPid, interruptible)
        ready = entry
        server.onInit = lambda: _say(f"ready {ready.mountId} {ready.major}:{ready.minor}")
        try:
            server.run()
        except _Unavailable as e:
            _say(f"unavailable {e}")
            return 1
        if not server.initialized:
            _say("error the connection ended before FUSE_INIT")
            return 1
        return 0
    finally:
        # Closing the only descriptor of the connection aborts it: every
        # caller stuck in one of our requests gets ENOTCONN/ECONNABORTED.
        if fd >= 0:
            os.close(fd)
        if entry is not None and _ourMount(mountpoint, entry.mountId) is not None:
            try:
                _umount2(mountpoint, MNT_DETACH)
            except OSError:
                pass


def main(argv: Sequence[str] | None = None) -> int:
    """
    Command line: C{python -m sysmon.hangfs serve MOUNTPOINT --parent PID
    [--interruptible] [--device PATH]}.
    """
    parser = argparse.ArgumentParser(prog="python -m sysmon.hangfs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the hanging file system (see HangingMount)")
    p.add_argument("mountpoint")
    p.add_argument("--parent", type=int, default=None, help="exit when this process exits")
    p.add_argument("--interruptible", action="store_true")
    p.add_argument("--device", default="/dev/fuse")
    args = parser.parse_args(argv)
    parent = args.parent if args.parent is not None else os.getppid()
    return serve(os.path.abspath(args.mountpoint), parent, args.interruptible, args.device)


# --- the helper ------------------------------------------------------------------

_live: set["HangingMount"] = set()


def _stopAll() -> None:
    for mount in list(_live):
        mount.stop()


# Stop what is left when the interpreter exits.  threading's hook runs before
# the interpreter joins its non-daemon threads (one stuck here would wait for
# ever: atexit hooks run only after that join); atexit covers the rest.
atexit.register(_stopAll)
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_stopAll)
# A forked child does not own its parent's mounts.
os.register_at_fork(after_in_child=_live.clear)


class HangingMount:
    """
    A FUSE mount on C{mountpoint} where C{stat(hangingPath)} blocks until
    L{stop}; any other name in it does not exist (but C{.pending}).

        with HangingMount(path) as m:
            start a thread or child that calls os.stat(m.hangingPath)
            m.waitPending()          # it is stuck in the server now

    Start and stop it from a thread that lives as long as the mount (the
    main thread); both calls block for a short while (at most C{timeout}).

    @ivar mountpoint: the real, absolute path of the mount point.
    @ivar hangingPath: C{mountpoint/hang}, the path whose C{stat} blocks.
    @ivar mountId: the mount's id in C{/proc/self/mountinfo} once started.
    @ivar device: C{(major, minor)} of the mounted file system once started.
    @ivar connection: the FUSE connection id (the name of its directory in
        C{/sys/fs/fuse/connections}) once started.
    @ivar process: the server's L{subprocess.Popen} once started.
    """

    def __init__(
        self,
        mountpoint: str,
        *,
        interruptible: bool = False,
        device: str = "/dev/fuse",
        controlDir: str = "/sys/fs/fuse/connections",
    ) -> None:
        """
        @param mountpoint: a directory (made if missing, and then removed by
            L{stop}).
        @param interruptible: if L{True}, a signal to a caller stuck in
            C{stat(hangingPath)} makes that C{stat} fail with C{EINTR}
            (Python retries it, so it blocks again unless the signal kills);
            by default signals do not free it, not even C{SIGKILL}.
        @param device: the FUSE device.
        @param controlDir: where the C{fusectl} file system is mounted.
        """
        self.mountpoint = os.path.realpath(mountpoint)
        self.hangingPath = os.path.join(self.mountpoint, HANG_NAME)
        self.interruptible = interruptible
        self.deviceNode = device
        self.controlDir = controlDir
        self.mountId: int | None = None
        self.device: tuple[int, int] | None = None
        self.connection: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._madeDir = False
        self._stopped = False
        self._owner = os.getpid()
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> HangingMount:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check(self) -> None:
        if not os.path.exists(self.deviceNode):
            raise FuseUnavailable(f"{self.deviceNode} does not exist")
        if os.geteuid() != 0:
            raise FuseUnavailable("mounting FUSE needs root (mount(2) without fusermount)")
        try:
            with open("/proc/filesystems") as f:
                known = {line.split()[-1] for line in f if line.strip()}
        except OSError as e:
            raise FuseUnavailable(f"cannot read /proc/filesystems: {e.strerror}")
        if "fuse" not in known:
            raise FuseUnavailable("the kernel has no fuse file system")

    def start(self, timeout: float = 10.0) -> None:
        """
        Start the server and wait until the file system is mounted and
        initialised.

        @param timeout: seconds to wait for that.
        @raise FuseUnavailable: FUSE cannot be used here; nothing is left.
        @raise HangFSError: the server failed or did not answer in time;
            nothing is left.
        """
        if self.process is not None or self._stopped:
            raise HangFSError("a HangingMount starts once")
        self._check()
        if not os.path.isdir(self.mountpoint):
            os.mkdir(self.mountpoint)
            self._madeDir = True
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package, env.get("PYTHONPATH", "")) if p
        )
        command = [sys.executable, "-m", "sysmon.hangfs", "serve", self.mountpoint]
        command += ["--parent", str(os.getpid()), "--device", self.deviceNode]
        if self.interruptible:
            command.append("--interruptible")
        self._stderr = tempfile.TemporaryFile()
        _live.add(self)
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                start_new_session=True,
            )
            line = self._readLine(timeout)
            self._started(line)
        except BaseException:
            self.stop()
            raise

    def _readLine(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise HangFSError(
                        f"hangfs server did not report within {timeout} s{self._errors()}"
                    )
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.process.wait(5)
                    raise HangFSError(
                        f"hangfs server exited ({self.process.returncode}) "
                        f"without reporting{self._errors()}"
                    )
                data += chunk
        self.process.stdout.close()
        return data.split(b"\n", 1)[0].decode("utf-8", "replace")

    def _errors(self) -> str:
        f = self._stderr
        if f is None:
            return ""
        try:
            f.seek(0)
            text = f.read(4000).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f": {text}" if text else ""

    def _started(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "unavailable":
            raise FuseUnavailable(rest)
        if word != "ready":
            raise HangFSError(f"hangfs server: {rest or line}{self._errors()}")
        mountId, devno = rest.split()
        major, minor = devno.split(":")
        self.mountId = int(mountId)
        self.device = (int(major), int(minor))
        self.connection = (self.device[0] << 20) | self.device[1]
        if not self.mounted():
            raise HangFSError(f"{self.mountpoint} is not in /proc/self/mountinfo")

    def mounted(self) -> bool:
        """
        Whether our mount is still in the mount table (looks at
        C{/proc/self/mountinfo} only, never at the mount).
        """
        if self.mountId is None:
            return False
        return _ourMount(self.mountpoint, self.mountId) is not None

    def pending(self) -> int:
        """
        How many lookups of C{hang} the server holds unanswered right now:
        callers that are really stuck inside it (a caller that has not
        reached it yet, or a second caller of the same name, which the
        kernel makes wait for the first one's lookup, is not counted).

        @raise OSError: the mount is stopped.
        """
        return os.stat(os.path.join(self.mountpoint, PENDING_NAME)).st_size

    def waitPending(self, count: int = 1, timeout: float = 10.0) -> bool:
        """
        Wait until L{pending} is at least C{count} (polls; a caller in
        another thread or process reaches the server when it is scheduled).

        @return: whether it got there within C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        while self.pending() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _abortConnection(self) -> str | None:
        """
        Abort the FUSE connection, so that every caller stuck on it gets an
        error: through C{fusectl}'s C{abort} file when it is mounted, else
        with C{umount2(MNT_FORCE)} (FUSE aborts on a forced unmount; the
        unmount itself fails while a caller is inside).

        @return: C{"control"}, C{"force"}, or L{None} when not mounted.
        """
        if not self.mounted():
            return None
        abort = os.path.join(self.controlDir, str(self.connection), "abort")
        try:
            with open(abort, "w") as f:
                f.write("1")
            return "control"
        except OSError:
            pass
        try:
            _umount2(self.mountpoint, MNT_FORCE)
        except OSError as e:
            if e.errno != errno.EBUSY:
                log.warn(
                    "cannot force unmount {path}: {why}", path=self.mountpoint, why=e.strerror
                )
        return "force"

    def stop(self, timeout: float = 5.0) -> None:
        """
        Release everything: abort the connection (every stuck C{stat} fails,
        e.g. with C{ECONNABORTED} or C{ENOTCONN}), detach the mount, end the
        server and wait for it.  Does nothing the second time, nor in a
        forked child of the process that started it.

        @param timeout: seconds the server gets to exit after C{SIGTERM}
            (then C{SIGKILL}).
        """
        if self._stopped or os.getpid() != self._owner:
            return
        self._stopped = True
        try:
            self._abortConnection()
            if self.mounted():
                try:
                    _umount2(self.mountpoint, MNT_DETACH)
                except OSError as e:
                    log.warn(
                        "cannot detach {path}: {why}", path=self.mountpoint, why=e.strerror
                    )
        finally:
            self._endServer(timeout)
            _live.discard(self)
            if self._stderr is not None:
                self._stderr.close()
            if self._madeDir:
                try:
                    os.rmdir(self.mountpoint)
                except OSError:
                    pass

    def _endServer(self, timeout: float) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.stdout is not None and not proc.stdout.closed:
            proc.stdout.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warn("hangfs server {pid} ignored SIGTERM; killing it", pid=proc.pid)
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
