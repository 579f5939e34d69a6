"""
Tests for L{sysmon.watchdog.device}: the watchdog device against real fake
devices (a FIFO and a pseudo-terminal, which both refuse watchdog ioctls
with ENOTTY as a non-watchdog device does), an injected fake driver for the
ioctls, and the heartbeat file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import tty

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sysmon.testing import LogCapture
from sysmon.watchdog import device
from sysmon.watchdog.codes import ENOERR
from sysmon.watchdog.device import (
    DeviceError,
    Heartbeat,
    WatchdogDevice,
    ioctlNumbers,
)

WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_KEEPALIVEPING = 0x8000

NUMBERS = ioctlNumbers()


def deviceLog(case: SynchronousTestCase) -> LogCapture:
    return LogCapture(case, "sysmon.watchdog.device.WatchdogDevice")


def readAll(fd: int) -> bytes:
    """
    Everything that can be read now from the non-blocking C{fd} (C{b""}
    when nothing is there or the writer is gone).
    """
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


class FakeDriver:
    """
    An ioctl function that behaves like a watchdog driver with a lower and
    an upper timeout limit, recording every request.

    @ivar calls: C{(request name, value passed)} in call order.
    """

    def __init__(
        self,
        minimum: int = 1,
        maximum: int = 600,
        current: int = 30,
        identity: bytes = b"iTCO_wdt",
        options: int = WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING,
        firmware: int = 6,
        roundUp: bool = False,
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.current = current
        self.identity = identity
        self.options = options
        self.firmware = firmware
        self.roundUp = roundUp
        self.calls: list[tuple[str, int | None]] = []

    def __call__(self, fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        if request == NUMBERS.setTimeout:
            wanted = int.from_bytes(buf, sys.byteorder, signed=True)
            self.calls.append(("SETTIMEOUT", wanted))
            if not self.minimum <= wanted <= self.maximum:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self.current = wanted + 1 if self.roundUp else wanted
            buf[:] = self.current.to_bytes(4, sys.byteorder, signed=True)
        elif request == NUMBERS.getTimeout:
            self.calls.append(("GETTIMEOUT", None))
            buf[:] = self.current.to_bytes(4, sys.byteorder, signed=True)
        elif request == NUMBERS.getSupport:
            self.calls.append(("GETSUPPORT", None))
            buf[:] = (
                self.options.to_bytes(4, sys.byteorder)
                + self.firmware.to_bytes(4, sys.byteorder)
                + self.identity.ljust(32, b"\0")
            )
        else:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        return 0


class IoctlNumberTests(SynchronousTestCase):
    """
    The ioctl numbers come from the kernel's C{_IOC} encoding.
    """

    def test_x86_64(self):
        """
        On x86_64 the numbers are the ones of C{linux/watchdog.h} there.
        """
        n = ioctlNumbers("x86_64")
        self.assertEqual(n.getSupport, 0x80285700)
        self.assertEqual(n.setOptions, 0x80045704)
        self.assertEqual(n.keepalive, 0x80045705)
        self.assertEqual(n.setTimeout, 0xC0045706)
        self.assertEqual(n.getTimeout, 0x80045707)
        self.assertEqual(n.getTimeLeft, 0x8004570A)

    def test_arm64SameAsX86(self):
        """
        ARM uses the generic encoding too.
        """
        self.assertEqual(ioctlNumbers("aarch64"), ioctlNumbers("x86_64"))

    def test_powerpc(self):
        """
        PowerPC puts the read direction one bit lower (13 size bits), so
        C{_IOR} numbers start with 0x40, while C{_IOWR} is unchanged.
        """
        n = ioctlNumbers("ppc64le")
        self.assertEqual(n.getSupport, 0x40285700)
        self.assertEqual(n.getTimeout, 0x40045707)
        self.assertEqual(n.setTimeout, 0xC0045706)

    def test_moduleUsesThisMachine(self):
        """
        The module's constants are the numbers of the machine we run on.
        """
        n = ioctlNumbers(platform.machine())
        self.assertEqual(
            (device.WDIOC_GETSUPPORT, device.WDIOC_SETTIMEOUT, device.WDIOC_GETTIMEOUT),
            (n.getSupport, n.setTimeout, n.getTimeout),
        )


class FifoDeviceTests(SynchronousTestCase):
    """
    L{WatchdogDevice} on a FIFO whose read end the test holds: the real
    open/write/close system calls, and ENOTTY from every ioctl.
    """

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="wdfifo")
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "watchdog")
        os.mkfifo(self.path)
        self.clock = Clock()
        self.logged = deviceLog(self)

    def openReader(self) -> int:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, fd)
        return fd

    def openDevice(self, **kw) -> WatchdogDevice:
        kw.setdefault("now", self.clock.seconds)
        dev = WatchdogDevice(self.path, 60, **kw)
        dev.open()
        self.addCleanup(dev.close)
        return dev

    def test_keepaliveWritesOneNul(self):
        """
        One refresh writes exactly one NUL byte and returns ENOERR.
        """
        reader = self.openReader()
        dev = self.openDevice()
        self.assertTrue(dev.isOpen)
        self.assertEqual(dev.keepalive(), ENOERR)
        self.assertEqual(readAll(reader), b"\0")
        self.assertEqual(dev.writes, 1)

    def test_rateLimited(self):
        """
        A second refresh 0.1 s after the first writes nothing; one 0.25 s
        after the first writes again.
        """
        reader = self.openReader()
        dev = self.openDevice()
        dev.keepalive()
        self.clock.advance(0.1)
        self.assertEqual(dev.keepalive(), ENOERR)
        self.assertEqual(readAll(reader), b"\0")
        self.clock.advance(0.15)
        dev.keepalive()
        self.assertEqual(readAll(reader), b"\0")
        self.assertEqual(dev.writes, 2)

    def test_closeWritesMagicV(self):
        """
        C{close()} writes C{V} and closes the device (the reader sees end
        of file); a second close does nothing.
        """
        reader = self.openReader()
        dev = self.openDevice()
        dev.keepalive()
        dev.close()
        self.assertFalse(dev.isOpen)
        self.assertEqual(os.read(reader, 10), b"\0V")
        self.assertEqual(os.read(reader, 10), b"")
        dev.close()
        self.assertEqual(len(self.logged.matching("magic close")), 1)

    def test_closeWithoutMagic(self):
        """
        C{close(magic=False)} closes without writing anything, and says the
        timer stays armed.
        """
        reader = self.openReader()
        dev = self.openDevice()
        dev.close(magic=False)
        self.assertFalse(dev.isOpen)
        self.assertEqual(os.read(reader, 10), b"")
        self.assertEqual(len(self.logged.matching("stays armed")), 1)

    def test_notOpenKeepalive(self):
        """
        Refreshing a device that is not open (or no longer) does nothing and
        reports no error.
        """
        reader = self.openReader()
        dev = WatchdogDevice(self.path, 60, now=self.clock.seconds)
        self.assertEqual(dev.keepalive(), ENOERR)
        dev.open()
        dev.close(magic=False)
        self.clock.advance(1)
        self.assertEqual(dev.keepalive(), ENOERR)
        self.assertEqual(os.read(reader, 10), b"")
        self.assertEqual(dev.writes, 0)

    def test_enottyWarnsOnceAndFeeds(self):
        """
        A file that refuses watchdog ioctls with ENOTTY gets one clear
        warning and no further ioctls; the timeout is unknown, and feeding
        goes on.
        """
        calls = []

        def recordingIoctl(*args):
            calls.append(args[1])
            return fcntl.ioctl(*args)

        reader = self.openReader()
        dev = self.openDevice(ioctl=recordingIoctl, refreshUseSettimeout="yes")
        self.assertEqual(calls, [NUMBERS.setTimeout])
        expected = (
            f"{self.path} does not take watchdog ioctls (ENOTTY): not a watchdog "
            f"device; the timeout cannot be set, feeding it anyway"
        )
        self.assertEqual(self.logged.matching("ENOTTY"), [expected])
        self.assertIsNone(dev.timeout)
        self.assertIsNone(dev.identity)
        self.assertFalse(dev.refreshByIoctl)
        self.assertFalse(dev.setTimeout(1))
        for _ in range(3):
            self.assertEqual(dev.keepalive(), ENOERR)
            self.clock.advance(1)
        self.assertEqual(readAll(reader), b"\0\0\0")
        self.assertEqual(calls, [NUMBERS.setTimeout])
        self.assertEqual(len(self.logged.matching("ENOTTY")), 1)

    def test_fifoWithoutReader(self):
        """
        A FIFO nobody reads fails at once (no hang) with a message saying
        there is no reader.
        """
        dev = WatchdogDevice(self.path, 60)
        e = self.assertRaises(DeviceError, dev.open)
        self.assertEqual(e.errno, errno.ENXIO)
        self.assertIn("no reader", str(e))
        self.assertIn(self.path, str(e))
        self.assertFalse(dev.isOpen)

    def test_fullFifo(self):
        """
        EAGAIN (a full FIFO) is no error: logged once per minute, ENOERR.
        """
        self.openReader()
        filler = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, filler)
        try:
            while True:
                os.write(filler, b"x" * 4096)
        except BlockingIOError:
            pass
        try:
            while True:
                os.write(filler, b"x")
        except BlockingIOError:
            pass
        dev = self.openDevice()
        self.assertEqual(dev.keepalive(), ENOERR)
        self.clock.advance(1)
        self.assertEqual(dev.keepalive(), ENOERR)
        self.assertEqual(len(self.logged.matching("EAGAIN")), 1)
        self.assertEqual(dev.writes, 0)

    def test_heartbeatOnRefresh(self):
        """
        With a heartbeat file, each refresh that writes adds one stamp; a
        rate-limited call adds none.
        """
        self.openReader()
        hb = Heartbeat(os.path.join(self.dir, "hb"), stamps=10, now=lambda: 1700000000)
        hb.open()
        self.addCleanup(hb.close)
        dev = self.openDevice(heartbeat=hb)
        dev.keepalive()
        self.clock.advance(0.1)
        dev.keepalive()
        self.assertEqual(list(hb.records), [b"--restart--\n", b" 1700000000\n"])


class OpenErrorTests(SynchronousTestCase):
    """
    Each reason an open fails gives its own clear message.
    """

    def failWith(self, code: int, path: str = "/dev/watchdog") -> DeviceError:
        def opener(p, flags):
            self.flags = flags
            raise OSError(code, os.strerror(code), p)

        return self.assertRaises(DeviceError, WatchdogDevice(path, 60, opener=opener).open)

    def test_flags(self):
        """
        The device is opened write-only, close-on-exec and non-blocking.
        """
        self.failWith(errno.EBUSY)
        self.assertEqual(self.flags, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)

    def test_missing(self):
        """
        ENOENT: no such device; load a driver.
        """
        e = self.failWith(errno.ENOENT)
        self.assertIn("/dev/watchdog does not exist", str(e))
        self.assertIn("softdog", str(e))

    def test_permission(self):
        """
        EACCES and EPERM: permission denied.
        """
        for code in (errno.EACCES, errno.EPERM):
            self.assertIn("permission denied", str(self.failWith(code)))

    def test_other(self):
        """
        Other errors give strerror and the number.
        """
        e = self.failWith(errno.EIO)
        self.assertEqual(str(e), f"cannot open /dev/watchdog: {os.strerror(errno.EIO)} (errno 5)")
        self.assertEqual(e.errno, errno.EIO)
        self.assertNotIn("\n", str(e))


class PtyDeviceTests(SynchronousTestCase):
    """
    L{WatchdogDevice} on the slave side of a pseudo-terminal in raw mode:
    what it writes arrives unchanged on the master the test reads.
    """

    def setUp(self):
        self.master, self.slave = os.openpty()
        self.addCleanup(os.close, self.master)
        self.addCleanup(os.close, self.slave)
        tty.setraw(self.slave)
        self.slavePath = os.ttyname(self.slave)
        self.clock = Clock()

    def readMaster(self, count: int) -> bytes:
        out = b""
        while len(out) < count:
            ready, _, _ = select.select([self.master], [], [], 10)
            if not ready:
                break
            out += os.read(self.master, count - len(out))
        return out

    def test_bytesArrive(self):
        """
        Refreshes write NUL bytes and the magic close a C{V}.
        """
        dev = WatchdogDevice(self.slavePath, 60, now=self.clock.seconds)
        dev.open()
        self.addCleanup(dev.close, magic=False)
        dev.keepalive()
        self.clock.advance(0.5)
        dev.keepalive()
        dev.close()
        self.assertEqual(self.readMaster(3), b"\0\0V")

    def test_busy(self):
        """
        A device another process holds exclusively gives the EBUSY message,
        for real: the test sets TIOCEXCL on the terminal and opens it as an
        unprivileged user (root would bypass TIOCEXCL).
        """
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SkipTest("setpriv (util-linux) is not installed")
        if os.geteuid() != 0:
            raise SkipTest("needs root to run a child as another user")
        package = os.path.dirname(os.path.abspath(device.__file__))
        root = os.path.dirname(os.path.dirname(package))
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
        env = dict(os.environ, PYTHONPATH=root)
        probe = subprocess.run(
            argv + ["-c", "import sysmon.watchdog.device"],
            env=env, cwd="/", capture_output=True, text=True, timeout=60,
        )
        if probe.returncode != 0:
            raise SkipTest(f"user 65534 cannot import sysmon here: {probe.stderr.strip()}")
        os.chown(self.slavePath, 65534, 65534)
        fcntl.ioctl(self.slave, termios.TIOCEXCL)
        self.addCleanup(fcntl.ioctl, self.slave, termios.TIOCNXCL)
        snippet = (
            "import sys\n"
            "from sysmon.watchdog.device import WatchdogDevice, DeviceError\n"
            "try:\n"
            "    WatchdogDevice(sys.argv[1], 60).open()\n"
            "except DeviceError as e:\n"
            "    print(e.errno, e)\n"
            "else:\n"
            "    print('opened')\n"
        )
        result = subprocess.run(
            argv + ["-c", snippet, self.slavePath],
            env=env, cwd="/", capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.strip(),
            f"{errno.EBUSY} {self.slavePath} is busy: another process holds it — systemd "
            f"(RuntimeWatchdogSec=), wd_keepalive or another watchdog daemon; only one "
            f"may feed it",
        )


class IoctlTests(SynchronousTestCase):
    """
    Timeout setting, identity and ioctl refresh against a fake driver.
    """

    def setUp(self):
        self.written: list[tuple[int, bytes]] = []
        self.closed: list[int] = []
        self.clock = Clock()
        self.logged = deviceLog(self)

    def makeDevice(self, driver: FakeDriver, timeout: int | None = 60, **kw) -> WatchdogDevice:
        def writer(fd, data):
            self.written.append((fd, data))
            return len(data)

        kw.setdefault("now", self.clock.seconds)
        dev = WatchdogDevice(
            "/dev/watchdog0", timeout, opener=lambda p, f: 7, ioctl=driver,
            writer=writer, closer=self.closed.append, **kw,
        )
        dev.open()
        return dev

    def test_timeoutSet(self):
        """
        An accepted timeout is set once and logged; L{timeout} is what the
        driver wrote back.
        """
        driver = FakeDriver(roundUp=True)
        dev = self.makeDevice(driver)
        self.assertEqual(driver.calls, [("SETTIMEOUT", 60), ("GETSUPPORT", None)])
        self.assertEqual(dev.timeout, 61)
        self.assertEqual(self.logged.matching("now set to"),
                         ["watchdog /dev/watchdog0 now set to 61 seconds"])

    def test_fallbackTimeouts(self):
        """
        A refused timeout is followed by the original's fallbacks above it
        (3, then 5, ...) until one is taken; each step is logged, and a
        timeout not more than twice the interval is warned about.
        """
        driver = FakeDriver(minimum=5)
        dev = self.makeDevice(driver, timeout=2, interval=3)
        self.assertEqual(
            driver.calls,
            [("SETTIMEOUT", 2), ("SETTIMEOUT", 3), ("SETTIMEOUT", 5), ("GETSUPPORT", None)],
        )
        self.assertEqual(dev.timeout, 5)
        texts = self.logged.texts()
        invalid = os.strerror(errno.EINVAL)
        for line in [
            f"cannot set the timeout of /dev/watchdog0 to 2 s: {invalid}",
            f"/dev/watchdog0 refused a timeout of 3 s too: {invalid}",
            "/dev/watchdog0 accepted a timeout of 5 s instead of 2 s",
            "watchdog /dev/watchdog0 now set to 5 seconds, which should be more than "
            "double the interval of 3 s",
        ]:
            self.assertIn(line, texts)

    def test_refusedLargeTimeout(self):
        """
        A refused timeout above all the fallbacks (60 s on a driver whose
        limit is 30 s) tries no fallback, as the original; the device keeps
        the driver's timeout, which is read back and logged.
        """
        driver = FakeDriver(maximum=30, current=30)
        dev = self.makeDevice(driver)
        self.assertEqual(
            driver.calls, [("SETTIMEOUT", 60), ("GETTIMEOUT", None), ("GETSUPPORT", None)]
        )
        self.assertEqual(dev.timeout, 30)
        self.assertIn("/dev/watchdog0 keeps the driver's timeout of 30 s", self.logged.texts())

    def test_keepDriverTimeout(self):
        """
        No timeout asked for: the driver's is only read.
        """
        driver = FakeDriver(current=45)
        dev = self.makeDevice(driver, timeout=None)
        self.assertEqual(driver.calls, [("GETTIMEOUT", None), ("GETSUPPORT", None)])
        self.assertEqual(dev.timeout, 45)

    def test_identity(self):
        """
        GETSUPPORT is decoded: identity, firmware version and option names
        are kept and logged.
        """
        dev = self.makeDevice(FakeDriver(identity=b"iTCO_wdt", firmware=6))
        self.assertEqual(dev.identity, "iTCO_wdt")
        self.assertEqual(dev.firmwareVersion, 6)
        self.assertEqual(dev.options, WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING)
        self.assertEqual(
            self.logged.matching("identity"),
            ["hardware watchdog identity: iTCO_wdt, firmware version 6, "
             "options: SETTIMEOUT, MAGICCLOSE, KEEPALIVEPING"],
        )
        self.assertEqual(self.logged.matching("magic close"), [])

    def test_noMagicClose(self):
        """
        A driver without WDIOF_MAGICCLOSE is pointed out.
        """
        self.makeDevice(FakeDriver(options=WDIOF_SETTIMEOUT))
        self.assertEqual(len(self.logged.matching("does not announce magic close")), 1)

    def test_it87AutoRefreshByIoctl(self):
        """
        C{auto}: the "IT87 WDT" driver is refreshed with SETTIMEOUT (its
        writes do not reset the timer), with the timeout asked for.
        """
        driver = FakeDriver(identity=b"IT87 WDT")
        dev = self.makeDevice(driver)
        self.assertTrue(dev.refreshByIoctl)
        del driver.calls[:]
        self.assertEqual(dev.keepalive(), ENOERR)
        self.assertEqual(driver.calls, [("SETTIMEOUT", 60)])
        self.assertEqual(self.written, [])
        self.assertEqual(dev.writes, 1)

    def test_otherDriverAutoWrites(self):
        """
        C{auto} with any other driver, and C{no} even with IT87, refresh by
        writing.
        """
        for identity, mode in [(b"iTCO_wdt", "auto"), (b"IT87 WDT", "no")]:
            del self.written[:]
            driver = FakeDriver(identity=identity)
            dev = self.makeDevice(driver, refreshUseSettimeout=mode)
            del driver.calls[:]
            dev.keepalive()
            self.assertEqual(driver.calls, [])
            self.assertEqual(self.written, [(7, b"\0")])

    def test_yesRefreshByIoctl(self):
        """
        C{yes} refreshes with SETTIMEOUT whatever the driver.
        """
        driver = FakeDriver()
        dev = self.makeDevice(driver, refreshUseSettimeout="yes")
        del driver.calls[:]
        dev.keepalive()
        self.assertEqual(driver.calls, [("SETTIMEOUT", 60)])
        self.assertEqual(self.written, [])

    def test_badRefreshMode(self):
        """
        An unknown refresh mode is refused at once.
        """
        self.assertRaises(ValueError, WatchdogDevice, "/dev/watchdog", 60,
                          refreshUseSettimeout="maybe")

    def test_setTimeout(self):
        """
        C{setTimeout} changes the timeout of the open device.
        """
        driver = FakeDriver()
        dev = self.makeDevice(driver)
        self.assertTrue(dev.setTimeout(1))
        self.assertEqual(driver.calls[-1], ("SETTIMEOUT", 1))
        self.assertEqual(dev.timeout, 1)
        self.assertFalse(dev.setTimeout(1000))
        dev.close()
        self.assertFalse(dev.setTimeout(1))

    def test_writeError(self):
        """
        A failed write returns its errno (logged once a minute); with
        C{ignoreErrors} it is logged and ENOERR returned.
        """
        for ignore, expected in [(False, errno.EIO), (True, ENOERR)]:

            def failing(fd, data):
                raise OSError(errno.EIO, os.strerror(errno.EIO))

            dev = WatchdogDevice(
                "/dev/watchdog", 60, opener=lambda p, f: 7, ioctl=FakeDriver(),
                writer=failing, closer=self.closed.append, now=self.clock.seconds,
                ignoreErrors=ignore,
            )
            dev.open()
            self.assertEqual(dev.keepalive(), expected)
            self.clock.advance(1)
            self.assertEqual(dev.keepalive(), expected)
            self.assertEqual(dev.writes, 0)
        self.assertEqual(len(self.logged.matching("failed: " + os.strerror(errno.EIO))), 2)

    def test_closeOnce(self):
        """
        The descriptor is closed exactly once.
        """
        dev = self.makeDevice(FakeDriver())
        dev.close()
        dev.close(magic=False)
        self.assertEqual(self.closed, [7])
        self.assertEqual(self.written, [(7, b"V")])


class HeartbeatTests(SynchronousTestCase):
    """
    The heartbeat file: a ring of 12-byte records, oldest first.
    """

    def setUp(self):
        self.path = self.mktemp()
        self.time = 1700000000.7

    def heartbeat(self, stamps: int = 300) -> Heartbeat:
        hb = Heartbeat(self.path, stamps=stamps, now=lambda: self.time)
        self.assertTrue(hb.open())
        self.addCleanup(hb.close)
        return hb

    def contents(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def test_newFile(self):
        """
        A new file starts with the restart record; each beat appends the
        epoch seconds right-aligned in 11 characters.
        """
        hb = self.heartbeat()
        self.assertEqual(self.contents(), b"--restart--\n")
        hb.beat()
        self.time += 1
        hb.beat()
        self.assertEqual(self.contents(), b"--restart--\n 1700000000\n 1700000001\n")

    def test_restart(self):
        """
        A restart keeps the old records and adds a restart record after
        them.
        """
        hb = self.heartbeat()
        hb.beat()
        hb.close()
        hb = self.heartbeat()
        self.time = 1700000100
        hb.beat()
        self.assertEqual(
            self.contents(),
            b"--restart--\n 1700000000\n--restart--\n 1700000100\n",
        )

    def test_ringWraps(self):
        """
        After more beats than C{stamps}, the file holds the last C{stamps}
        records, oldest first.
        """
        hb = self.heartbeat(stamps=3)
        for i in range(5):
            self.time = 1000 + i
            hb.beat()
        self.assertEqual(self.contents(), b"       1002\n       1003\n       1004\n")
        self.assertEqual(len(self.contents()), 3 * 12)

    def test_restartAfterWrap(self):
        """
        A restart with a full ring pushes out the oldest record.
        """
        hb = self.heartbeat(stamps=3)
        for i in range(3):
            self.time = 1000 + i
            hb.beat()
        hb.close()
        self.heartbeat(stamps=3)
        self.assertEqual(self.contents(), b"       1001\n       1002\n--restart--\n")

    def test_fewerStamps(self):
        """
        A file written with more stamps than now configured is cut to the
        ring's length.
        """
        with open(self.path, "wb") as f:
            f.write(b"".join(b"%11d\n" % (100 + i) for i in range(6)))
        hb = self.heartbeat(stamps=2)
        self.assertEqual(self.contents(), b"        105\n--restart--\n")
        self.time = 200
        hb.beat()
        self.assertEqual(self.contents(), b"--restart--\n        200\n")

    def test_unopenable(self):
        """
        A heartbeat file that cannot be opened is logged and reported, and
        beating it does nothing.
        """
        events = LogCapture(self, "sysmon.watchdog.device.Heartbeat")
        hb = Heartbeat(os.path.join(self.path, "missing-dir", "hb"))
        self.assertFalse(hb.open())
        hb.beat()
        self.assertEqual(len(events.matching("cannot open the heartbeat file")), 1)
