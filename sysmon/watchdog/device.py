"""
The watchdog device (C{/dev/watchdog}) and the heartbeat file.

L{WatchdogDevice} opens the device, sets its timeout with
C{WDIOC_SETTIMEOUT} (falling back to 3, 5 or 10 seconds as the original
daemon does for drivers with a lower limit), logs the driver's identity
from C{WDIOC_GETSUPPORT}, feeds it by writing one NUL byte (at most once per
0.2 s) and closes it either with the magic C{V}, which disarms the timer,
or without it, which leaves the timer running so the hardware resets the
machine.  Every call is non-blocking: the device is opened with
C{O_NONBLOCK}, and a write to a watchdog driver never waits.

L{Heartbeat} keeps the original's debugging aid: a small file holding the
epoch seconds of the last N refreshes, oldest first, with a C{--restart--}
record at each start, so gaps in it show when the machine was down.

The ioctl numbers are derived with the kernel's C{_IOC} encoding for the
machine we run on (the generic one on x86 and ARM, the other layout on
MIPS, PowerPC, SPARC and Alpha), not hard-coded.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import stat
import struct
import time
from collections import deque
from typing import Callable, Iterable

import attrs
from twisted.logger import Logger

from sysmon.ratelimit import Once
from sysmon.watchdog.codes import ENOERR

__all__ = [
    "DeviceError",
    "Heartbeat",
    "WatchdogDevice",
    "WatchdogIoctls",
    "WDIOF_NAMES",
    "ioctlNumbers",
]


# --- ioctl numbers ------------------------------------------------------------


@attrs.frozen
class _IocLayout:
    sizeBits: int
    none: int
    read: int
    write: int


_GENERIC = _IocLayout(sizeBits=14, none=0, read=2, write=1)
#: MIPS, PowerPC, SPARC and Alpha: 13 size bits, 3 direction bits.
_OTHER = _IocLayout(sizeBits=13, none=1, read=2, write=4)
_OTHER_PREFIXES = ("mips", "ppc", "powerpc", "sparc", "alpha")


def _layout(machine: str) -> _IocLayout:
    if machine.lower().startswith(_OTHER_PREFIXES):
        return _OTHER
    return _GENERIC


def _ioc(layout: _IocLayout, direction: int, kind: str, nr: int, size: int) -> int:
    # nr: 8 bits at 0, type: 8 bits at 8, size at 16, direction above it.
    return (direction << (16 + layout.sizeBits)) | (size << 16) | (ord(kind) << 8) | nr


#: C{struct watchdog_info}: u32 options, u32 firmware_version, u8 identity[32].
_WATCHDOG_INFO = struct.Struct("=II32s")
_INT = struct.Struct("=i")


@attrs.frozen
class WatchdogIoctls:
    """
    The watchdog ioctl request numbers of one machine type
    (C{linux/watchdog.h}).
    """

    getSupport: int
    getStatus: int
    getBootStatus: int
    getTemp: int
    setOptions: int
    keepalive: int
    setTimeout: int
    getTimeout: int
    setPretimeout: int
    getPretimeout: int
    getTimeLeft: int


def ioctlNumbers(machine: str | None = None) -> WatchdogIoctls:
    """
    Derive the watchdog ioctl numbers with the kernel's C{_IOC} encoding.

    @param machine: C{uname -m} of the target (C{x86_64}, C{aarch64},
        C{ppc64le}, ...); by default the machine we run on.
    """
    layout = _layout(machine if machine is not None else platform.machine())
    size = _INT.size

    def ior(nr: int, sz: int = size) -> int:
        return _ioc(layout, layout.read, "W", nr, sz)

    def iowr(nr: int) -> int:
        return _ioc(layout, layout.read | layout.write, "W", nr, size)

    return WatchdogIoctls(
        getSupport=ior(0, _WATCHDOG_INFO.size),
        getStatus=ior(1),
        getBootStatus=ior(2),
        getTemp=ior(3),
        setOptions=ior(4),
        keepalive=ior(5),
        setTimeout=iowr(6),
        getTimeout=ior(7),
        setPretimeout=iowr(8),
        getPretimeout=ior(9),
        getTimeLeft=ior(10),
    )


_IOCTLS = ioctlNumbers()
WDIOC_GETSUPPORT = _IOCTLS.getSupport
WDIOC_SETTIMEOUT = _IOCTLS.setTimeout
WDIOC_GETTIMEOUT = _IOCTLS.getTimeout

#: The C{WDIOF_*} option bits of C{struct watchdog_info}, in bit order.
WDIOF_NAMES: tuple[tuple[int, str], ...] = (
    (0x0001, "OVERHEAT"),
    (0x0002, "FANFAULT"),
    (0x0004, "EXTERN1"),
    (0x0008, "EXTERN2"),
    (0x0010, "POWERUNDER"),
    (0x0020, "CARDRESET"),
    (0x0040, "POWEROVER"),
    (0x0080, "SETTIMEOUT"),
    (0x0100, "MAGICCLOSE"),
    (0x0200, "PRETIMEOUT"),
    (0x0400, "ALARMONLY"),
    (0x8000, "KEEPALIVEPING"),
)
_WDIOF_MAGICCLOSE = 0x0100


def _optionNames(options: int) -> list[str]:
    names = [name for bit, name in WDIOF_NAMES if options & bit]
    rest = options & ~sum(bit for bit, _ in WDIOF_NAMES)
    if rest:
        names.append(f"0x{rest:x}")
    return names


# --- the device ---------------------------------------------------------------


class DeviceError(Exception):
    """
    The watchdog device could not be opened.  C{str()} of it is one line
    that tells the operator what is wrong and what to do.

    @ivar path: the device.
    @ivar errno: the C{errno} of the failed C{open}, if there was one.
    """

    def __init__(self, message: str, path: str = "", errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


def _isFifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _openError(path: str, error: OSError) -> DeviceError:
    code = error.errno
    if code == errno.EBUSY:
        text = (
            f"{path} is busy: another process holds it — systemd "
            f"(RuntimeWatchdogSec=), wd_keepalive or another watchdog daemon; "
            f"only one may feed it"
        )
    elif code == errno.ENOENT:
        text = (
            f"{path} does not exist: no such device; load the watchdog driver "
            f"(e.g. modprobe softdog, or the hardware's driver such as iTCO_wdt)"
        )
    elif code in (errno.EACCES, errno.EPERM):
        text = (
            f"{path}: permission denied; the device can only be opened by root "
            f"or a user allowed to write it"
        )
    elif code == errno.ENXIO and _isFifo(path):
        text = f"{path} is a FIFO with no reader: nothing reads what would be written to it"
    elif code in (errno.ENXIO, errno.ENODEV):
        text = (
            f"{path}: no device behind it ({os.strerror(code)}); is the watchdog "
            f"driver loaded?"
        )
    elif code is not None:
        text = f"cannot open {path}: {os.strerror(code)} (errno {code})"
    else:
        text = f"cannot open {path}: {error}"
    return DeviceError(text, path, code)


_REFRESH_MODES = {"yes": "yes", "no": "no", "auto": "auto", True: "yes", False: "no"}


class WatchdogDevice:
    """
    One watchdog device: open, set the timeout, feed, close.

    @ivar path: the device file.
    @ivar requestedTimeout: the timeout asked for (seconds); L{None} or 0
        keeps the driver's.
    @ivar timeout: the timeout the driver really uses, as it reported it, or
        L{None} when it is not known (not open, or not a watchdog device).
    @ivar identity: the driver's identity string from C{WDIOC_GETSUPPORT},
        or L{None}.
    @ivar firmwareVersion: the driver's firmware version, or L{None}.
    @ivar options: the driver's C{WDIOF_*} option bits, or L{None}.
    @ivar writes: how many refreshes succeeded (NUL bytes written, or
        C{WDIOC_SETTIMEOUT} refreshes).
    @ivar refreshByIoctl: whether refreshes use C{WDIOC_SETTIMEOUT} instead
        of a write (decided at L{open}).
    """

    log = Logger()

    #: Minimum seconds between two refreshes.
    MIN_REFRESH = 0.2
    #: Timeouts tried when the requested one is refused (only the ones above
    #: it: drivers such as iTCO_wdt have a lower limit).
    FALLBACK_TIMEOUTS = (3, 5, 10)
    #: Seconds between two log lines about the same failing refresh.
    COMPLAIN_EVERY = 60.0

    def __init__(
        self,
        path: str,
        timeout: int | None,
        *,
        interval: float = 1,
        refreshUseSettimeout: str | bool = "auto",
        ignoreErrors: bool = False,
        heartbeat: Heartbeat | None = None,
        now: Callable[[], float] = time.monotonic,
        opener: Callable[..., int] = os.open,
        ioctl: Callable[..., object] = fcntl.ioctl,
        writer: Callable[[int, bytes], int] = os.write,
        closer: Callable[[int], None] = os.close,
    ) -> None:
        """
        @param path: the device file.
        @param timeout: the timeout to set (seconds), L{None} or 0 to keep
            the driver's.
        @param interval: the daemon's refresh interval; a timeout of at most
            twice that is warned about.
        @param refreshUseSettimeout: C{"yes"}: refresh with
            C{WDIOC_SETTIMEOUT} instead of a write; C{"no"}: always write;
            C{"auto"}: only for the "IT87 WDT" driver, whose writes do not
            reset its timer.
        @param ignoreErrors: a failed refresh is logged and reported as
            success.
        @param heartbeat: a L{Heartbeat} that gets a stamp after each
            successful refresh.
        @param now: monotonic clock (for the refresh rate limit).
        @param opener: C{os.open}.
        @param ioctl: C{fcntl.ioctl}; called as C{ioctl(fd, request,
            bytearray, True)}.
        @param writer: C{os.write}.
        @param closer: C{os.close}.
        """
        if refreshUseSettimeout not in _REFRESH_MODES:
            raise ValueError(
                f"refreshUseSettimeout must be 'yes', 'no' or 'auto', "
                f"not {refreshUseSettimeout!r}"
            )
        self.path = path
        self.requestedTimeout = timeout
        self.interval = interval
        self.refreshUseSettimeout = _REFRESH_MODES[refreshUseSettimeout]
        self.ignoreErrors = ignoreErrors
        self.heartbeat = heartbeat
        self._now = now
        self._opener = opener
        self._ioctl = ioctl
        self._writer = writer
        self._closer = closer
        self._ioctls = _IOCTLS
        self._fd: int | None = None
        self._takesIoctls = True
        self._lastRefresh: float | None = None
        self._refreshTimeout = timeout or 0
        self._complain = Once(self.COMPLAIN_EVERY)
        self.timeout: int | None = None
        self.identity: str | None = None
        self.firmwareVersion: int | None = None
        self.options: int | None = None
        self.refreshByIoctl = False
        self.writes = 0

    @property
    def isOpen(self) -> bool:
        """
        Whether the device is open (and so armed).
        """
        return self._fd is not None

    # -- opening

    def open(self) -> None:
        """
        Open the device, set its timeout, log its identity.  Opening arms
        the timer: from now on it must be fed.  Does nothing if it is open.

        @raise DeviceError: it cannot be opened; the message says why.
        """
        if self._fd is not None:
            return
        flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = self._opener(self.path, flags)
        except OSError as e:
            raise _openError(self.path, e) from None
        self._fd = fd
        self._takesIoctls = True
        self._lastRefresh = None
        self.timeout = self.identity = self.firmwareVersion = self.options = None
        self.log.info("opened the watchdog device {path}", path=self.path)
        self._setInitialTimeout()
        self._readSupport()
        self._chooseRefresh()

    def _call(self, request: int, buf: bytearray) -> None:
        """
        One ioctl on the device.  ENOTTY means it is not a watchdog device:
        say so once and make no further ioctls.

        @raise OSError: the ioctl failed.
        """
        assert self._fd is not None
        try:
            self._ioctl(self._fd, request, buf, True)
        except OSError as e:
            if e.errno == errno.ENOTTY and self._takesIoctls:
                self._takesIoctls = False
                self.log.warn(
                    "{path} does not take watchdog ioctls (ENOTTY): not a watchdog "
                    "device; the timeout cannot be set, feeding it anyway",
                    path=self.path,
                )
            raise

    def _setTimeoutIoctl(self, seconds: int) -> int:
        buf = bytearray(_INT.pack(seconds))
        self._call(self._ioctls.setTimeout, buf)
        return _INT.unpack(buf)[0]

    def _getTimeoutIoctl(self) -> int | None:
        if not self._takesIoctls:
            return None
        buf = bytearray(_INT.size)
        try:
            self._call(self._ioctls.getTimeout, buf)
        except OSError as e:
            if e.errno != errno.ENOTTY:
                self.log.error(
                    "cannot read the timeout of {path}: {why}",
                    path=self.path, why=os.strerror(e.errno or 0),
                )
            return None
        return _INT.unpack(buf)[0]

    def _setInitialTimeout(self) -> None:
        wanted = self.requestedTimeout
        if not wanted or wanted <= 0:
            actual = self._getTimeoutIoctl()
            if actual is not None:
                self._refreshTimeout = actual
                self.log.info(
                    "watchdog {path} was set to {timeout} seconds",
                    path=self.path, timeout=actual,
                )
            self._useTimeout(actual, announce=False)
            return
        self._refreshTimeout = wanted
        try:
            actual = self._setTimeoutIoctl(wanted)
        except OSError as e:
            if e.errno == errno.ENOTTY:
                return
            self.log.error(
                "cannot set the timeout of {path} to {timeout} s: {why}",
                path=self.path, timeout=wanted, why=os.strerror(e.errno or 0),
            )
            fallback = self._tryOtherTimeouts(wanted)
            if fallback is None:
                kept = self._getTimeoutIoctl()
                if kept is not None:
                    self.log.warn(
                        "{path} keeps the driver's timeout of {timeout} s",
                        path=self.path, timeout=kept,
                    )
                self._useTimeout(kept, announce=False)
                return
            actual = fallback
        self._useTimeout(actual, announce=True)

    def _tryOtherTimeouts(self, refused: int) -> int | None:
        for seconds in self.FALLBACK_TIMEOUTS:
            if seconds <= refused or not self._takesIoctls:
                continue
            try:
                actual = self._setTimeoutIoctl(seconds)
            except OSError as e:
                if e.errno != errno.ENOTTY:
                    self.log.warn(
                        "{path} refused a timeout of {timeout} s too: {why}",
                        path=self.path, timeout=seconds, why=os.strerror(e.errno or 0),
                    )
                continue
            self.log.warn(
                "{path} accepted a timeout of {timeout} s instead of {refused} s",
                path=self.path, timeout=seconds, refused=refused,
            )
            self._refreshTimeout = seconds
            return actual
        return None

    def _useTimeout(self, actual: int | None, announce: bool) -> None:
        self.timeout = actual
        if actual is None:
            return
        if actual <= 2 * self.interval:
            self.log.warn(
                "watchdog {path} now set to {timeout} seconds, which should be more "
                "than double the interval of {interval} s",
                path=self.path, timeout=actual, interval=self.interval,
            )
        elif announce:
            self.log.info(
                "watchdog {path} now set to {timeout} seconds",
                path=self.path, timeout=actual,
            )

    def _readSupport(self) -> None:
        if not self._takesIoctls:
            return
        buf = bytearray(_WATCHDOG_INFO.size)
        try:
            self._call(self._ioctls.getSupport, buf)
        except OSError as e:
            if e.errno != errno.ENOTTY:
                self.log.error(
                    "cannot get the identity of {path}: {why}",
                    path=self.path, why=os.strerror(e.errno or 0),
                )
            return
        options, firmware, identity = _WATCHDOG_INFO.unpack(buf)
        self.options = options
        self.firmwareVersion = firmware
        self.identity = identity.split(b"\0", 1)[0].decode("ascii", "replace")
        names = _optionNames(options)
        self.log.info(
            "hardware watchdog identity: {identity}, firmware version {firmware}, "
            "options: {options}",
            identity=self.identity, firmware=firmware,
            options=", ".join(names) if names else "none",
        )
        if not options & _WDIOF_MAGICCLOSE:
            self.log.info(
                "{path} does not announce magic close: the timer may not stop on close",
                path=self.path,
            )

    def _chooseRefresh(self) -> None:
        mode = self.refreshUseSettimeout
        byIoctl = mode == "yes" or (mode == "auto" and self.identity == "IT87 WDT")
        if byIoctl and not self._takesIoctls:
            byIoctl = False
        self.refreshByIoctl = byIoctl
        if byIoctl:
            if mode == "yes":
                self.log.info("refreshing {path} with WDIOC_SETTIMEOUT", path=self.path)
            else:
                self.log.info(
                    "refreshing {path} with WDIOC_SETTIMEOUT (IT87 fix-up)",
                    path=self.path,
                )

    # -- feeding

    def keepalive(self) -> int:
        """
        Feed the watchdog: write one NUL byte (or refresh with
        C{WDIOC_SETTIMEOUT}, see C{refreshUseSettimeout}).  Calls less than
        L{MIN_REFRESH} seconds after the last refresh do nothing.

        @return: C{ENOERR}, or the C{errno} of a failed refresh (C{ENOERR}
            when C{ignoreErrors} is set, when the device is not open, and
            for EAGAIN: the byte could not be written because nobody reads
            a full FIFO).
        """
        if self._fd is None:
            return ENOERR
        now = self._now()
        if self._lastRefresh is not None:
            since = now - self._lastRefresh
            # A clock that went backwards counts as "long ago", as the original.
            if 0 <= since < self.MIN_REFRESH:
                return ENOERR
        self._lastRefresh = now
        err = ENOERR
        how = "write to"
        if self.refreshByIoctl and self._takesIoctls:
            how = "WDIOC_SETTIMEOUT refresh of"
            try:
                self._setTimeoutIoctl(self._refreshTimeout)
            except OSError as e:
                err = e.errno or errno.EIO
        else:
            try:
                self._writer(self._fd, b"\0")
            except OSError as e:
                err = e.errno or errno.EIO
        if err == ENOERR:
            self.writes += 1
            if self.heartbeat is not None:
                self.heartbeat.beat()
            return ENOERR
        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
            if self._complain(err, now):
                self.log.warn(
                    "{path} does not take the byte (EAGAIN): nobody reads it",
                    path=self.path,
                )
            return ENOERR
        if self._complain(err, now):
            self.log.error(
                "{how} watchdog device {path} failed: {why} (errno {errno})",
                how=how, path=self.path, why=os.strerror(err), errno=err,
            )
        return ENOERR if self.ignoreErrors else err

    def setTimeout(self, seconds: int) -> bool:
        """
        Change the timeout of the open device (the shutdown sets it to 1 s
        before it stops feeding).

        @return: whether the driver took it; L{timeout} holds what it set.
        """
        if self._fd is None:
            self.log.warn(
                "cannot set the timeout of {path}: it is not open", path=self.path
            )
            return False
        if not self._takesIoctls:
            self.log.warn(
                "cannot set the timeout of {path}: it takes no watchdog ioctls",
                path=self.path,
            )
            return False
        try:
            actual = self._setTimeoutIoctl(seconds)
        except OSError as e:
            if e.errno != errno.ENOTTY:
                self.log.error(
                    "cannot set the timeout of {path} to {timeout} s: {why}",
                    path=self.path, timeout=seconds, why=os.strerror(e.errno or 0),
                )
            return False
        self.timeout = actual
        self._refreshTimeout = seconds
        self.log.info(
            "watchdog {path} now set to {timeout} seconds", path=self.path, timeout=actual
        )
        return True

    # -- closing

    def close(self, magic: bool = True) -> None:
        """
        Close the device.  Does nothing if it is not open.

        @param magic: write C{V} first ("magic close"), so the driver
            disarms the timer (unless it is built C{nowayout}).  The
            shutdown path passes L{False}: the timer stays armed and the
            hardware resets the machine.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if magic:
            try:
                self._writer(fd, b"V")
            except OSError as e:
                self.log.error(
                    "cannot write the magic V to {path}: {why}; its timer stays armed",
                    path=self.path, why=os.strerror(e.errno or 0),
                )
            else:
                self.log.info(
                    "magic close of {path}: wrote V, the driver stops its timer "
                    "(unless it is built nowayout)",
                    path=self.path,
                )
        else:
            self.log.warn(
                "closing {path} without the magic V: its timer stays armed",
                path=self.path,
            )
        try:
            self._closer(fd)
        except OSError as e:
            self.log.critical(
                "cannot close the watchdog device {path}: {why}",
                path=self.path, why=os.strerror(e.errno or 0),
            )


# --- the heartbeat file -------------------------------------------------------

#: One heartbeat record: the epoch seconds right-aligned in 11 characters
#: and a newline.
RECORD_SIZE = 12
RESTART_RECORD = b"--restart--\n"


def _record(text: bytes) -> bytes:
    return text[: RECORD_SIZE - 1].rjust(RECORD_SIZE - 1) + b"\n"


def _parseRecords(data: bytes) -> Iterable[bytes]:
    for line in data.split(b"\n"):
        line = line.strip(b" \0\r")
        if line:
            yield _record(line)


class Heartbeat:
    """
    The heartbeat file: a ring of the last C{stamps} refresh times, oldest
    first, rewritten from the start of the file at each L{beat}.  Each start
    adds a C{--restart--} record, so the file shows restarts and the gaps
    around them.  Records are 12 bytes: the epoch seconds right-aligned in
    11 characters, and a newline.

    Unlike the original, L{open} writes the ring straight away (so the
    restart record is on disk before the first refresh), and the file is
    cut to the ring's length when it held more records than C{stamps}.

    @ivar path: the file.
    @ivar stamps: how many records the ring keeps.
    @ivar records: the ring, oldest first.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        stamps: int = 300,
        now: Callable[[], float] = time.time,
    ) -> None:
        if stamps < 1:
            raise ValueError(f"stamps must be at least 1, not {stamps}")
        self.path = path
        self.stamps = stamps
        self._now = now
        self._fd: int | None = None
        self._size = 0
        self._complain = Once(60.0)
        self.records: deque[bytes] = deque(maxlen=stamps)

    @property
    def isOpen(self) -> bool:
        """
        Whether the file is open.
        """
        return self._fd is not None

    def open(self) -> bool:
        """
        Open the file (it is created if missing), load its records and add
        a C{--restart--} record.

        @return: whether it could be opened; a failure is logged and the
            daemon carries on without a heartbeat file.
        """
        if self._fd is not None:
            return True
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
                )
        except OSError as e:
            self.log.error(
                "cannot open the heartbeat file {path}: {why}",
                path=self.path, why=os.strerror(e.errno or 0),
            )
            return False
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except OSError as e:
            self.log.error(
                "cannot read the heartbeat file {path}: {why}",
                path=self.path, why=os.strerror(e.errno or 0),
            )
            chunks = []
        data = b"".join(chunks)
        self._fd = fd
        self._size = len(data)
        self.records.clear()
        self.records.extend(_parseRecords(data))
        self.records.append(RESTART_RECORD)
        self._write()
        return True

    def beat(self) -> None:
        """
        Add the current time to the ring and rewrite the file (no fsync: it
        is a debugging aid, and this must stay fast).
        """
        if self._fd is None:
            return
        self.records.append(_record(b"%d" % int(self._now())))
        self._write()

    def _write(self) -> None:
        assert self._fd is not None
        data = b"".join(self.records)
        try:
            os.pwrite(self._fd, data, 0)
            if len(data) < self._size:
                os.ftruncate(self._fd, len(data))
            self._size = len(data)
        except OSError as e:
            if self._complain(e.errno, time.monotonic()):
                self.log.error(
                    "cannot write the heartbeat file {path}: {why}",
                    path=self.path, why=os.strerror(e.errno or 0),
                )

    def close(self) -> None:
        """
        Close the file.  Does nothing if it is not open.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.close(fd)
        except OSError as e:
            self.log.error(
                "cannot close the heartbeat file {path}: {why}",
                path=self.path, why=os.strerror(e.errno or 0),
            )
