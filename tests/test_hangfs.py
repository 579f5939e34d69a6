"""
Tests for L{sysmon.hangfs}: a real FUSE mount where C{stat} of one path
blocks until the mount is stopped, and that nothing (mount, server, stuck
thread or process) outlives its owner.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import unittest

from twisted.trial.unittest import SynchronousTestCase

from sysmon import hangfs
from sysmon.hangfs import FSTYPE, FuseUnavailable, HangingMount, mountEntries, parseMountinfo
from sysmon.testing import processAlive

SOON = 15.0
"""Seconds allowed for something that happens at once on an idle machine
(the test machine is small and busy); waits end as soon as it happens."""

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def hangfsMountsAt(path: str) -> list[hangfs.MountEntry]:
    """
    The hangfs mounts on C{path} in our mount table.
    """
    return [e for e in mountEntries() if e.mountPoint == path and e.fstype == FSTYPE]


def detachLeftovers(path: str) -> None:
    """
    Last-resort cleanup: detach any hangfs mount a failed test left on
    C{path}.
    """
    for _ in hangfsMountsAt(path):
        try:
            hangfs._umount2(path, hangfs.MNT_FORCE | hangfs.MNT_DETACH)
        except OSError:
            break


def waitFor(predicate, timeout: float) -> bool:
    """
    Poll C{predicate} until true or C{timeout} seconds pass (for a real
    process or kernel state; there is no event to wait on).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Caller:
    """
    C{os.stat(path)} in a daemon thread.

    @ivar done: set when the call returned or raised.
    @ivar result: the C{stat_result} or the exception.
    """

    def __init__(self, path: str) -> None:
        self.done = threading.Event()
        self.result: object = None
        self.thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self.thread.start()

    def _run(self, path: str) -> None:
        try:
            self.result = os.stat(path)
        except BaseException as e:
            self.result = e
        self.done.set()


def startOrSkip(mount: HangingMount, case: SynchronousTestCase) -> HangingMount:
    """
    Start C{mount}, stopped at the end of C{case}; skip the test when FUSE
    cannot be used here.
    """
    case.addCleanup(detachLeftovers, mount.mountpoint)
    case.addCleanup(mount.stop)
    try:
        mount.start()
    except FuseUnavailable as e:
        raise unittest.SkipTest(f"FUSE unavailable: {e.reason}")
    return mount


def statChild(case: SynchronousTestCase, mount: HangingMount) -> subprocess.Popen[bytes]:
    """
    A child process that calls C{stat(mount.hangingPath)} after saying
    C{go}; at the end of C{case} it is killed, the mount stopped (which frees
    it) and the child reaped.
    """
    code = "import os, sys; print('go', flush=True); os.stat(sys.argv[1])"
    child = subprocess.Popen(
        [sys.executable, "-c", code, mount.hangingPath],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )

    def end() -> None:
        if child.poll() is None:
            child.kill()
        mount.stop()
        child.wait(SOON)
        child.stdout.close()

    case.addCleanup(end)
    case.assertEqual(child.stdout.readline(), b"go\n")
    return child


class MountinfoTests(SynchronousTestCase):
    """
    Reading C{/proc/self/mountinfo}.
    """

    def test_fields(self):
        """
        Id, device, mount point (with octal escapes undone), type and
        source come from their fields, past any optional fields.
        """
        text = (
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:7 - ext3 /dev/root rw\n"
            "43 22 0:39 / /tmp/x rw,nosuid,nodev - fuse.hangfs hangfs rw,user_id=0\n"
        )
        self.assertEqual(
            parseMountinfo(text),
            [
                hangfs.MountEntry(36, 98, 0, "/mnt two", "ext3", "/dev/root"),
                hangfs.MountEntry(43, 0, 39, "/tmp/x", "fuse.hangfs", "hangfs"),
            ],
        )

    def test_malformedLinesLeftOut(self):
        """
        Lines without the separator or with a bad device are skipped, the
        good ones kept.
        """
        text = (
            "garbage\n"
            "1 2 x:y / /a rw - ext4 /dev/a rw\n"
            "3 2 8:1 / /b rw - ext4 /dev/b rw\n"
        )
        self.assertEqual([e.mountPoint for e in parseMountinfo(text)], ["/b"])


class UnavailableTests(SynchronousTestCase):
    """
    When FUSE cannot be used, C{start} says why and leaves nothing.
    """

    def test_noDevice(self):
        """
        A missing FUSE device gives L{FuseUnavailable} naming it, starts no
        server and makes no directory.
        """
        where = os.path.join(self.mktemp(), "mnt")
        mount = HangingMount(where, device="/dev/no-such-fuse")
        self.addCleanup(mount.stop)
        e = self.assertRaises(FuseUnavailable, mount.start)
        self.assertIn("/dev/no-such-fuse", e.reason)
        self.assertIsNone(mount.process)
        self.assertFalse(os.path.exists(os.path.dirname(where)))

    def test_deviceThatIsNotFuse(self):
        """
        A device path that opens but is not FUSE (here /dev/null) makes the
        kernel refuse the mount; the server reports that, exits, and the
        directory it was given is removed again.
        """
        where = os.path.abspath(self.mktemp())
        mount = HangingMount(where, device="/dev/null")
        self.addCleanup(detachLeftovers, mount.mountpoint)
        self.addCleanup(mount.stop)
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root")
        e = self.assertRaises(hangfs.HangFSError, mount.start)
        self.assertIn("mount", str(e))
        self.assertIsNotNone(mount.process.returncode)
        self.assertEqual(hangfsMountsAt(mount.mountpoint), [])
        self.assertFalse(os.path.exists(where))


class HangingMountTests(SynchronousTestCase):
    """
    A started L{HangingMount}.
    """

    def setUp(self):
        self.mount = startOrSkip(HangingMount(os.path.abspath(self.mktemp())), self)

    def test_otherNameIsMissing(self):
        """
        Any other name in the mount does not exist, answered at once.
        """
        caller = Caller(os.path.join(self.mount.mountpoint, "other"))
        self.assertTrue(caller.done.wait(SOON), "stat of another name blocked")
        self.assertIsInstance(caller.result, FileNotFoundError)

    def test_rootIsAnEmptyDirectory(self):
        """
        The mount point is a directory on the mounted device, listed in
        mountinfo as a C{fuse.hangfs} mount; it lists empty, C{statvfs}
        works, and no lookup is pending.
        """
        st = os.stat(self.mount.mountpoint)
        self.assertTrue(stat.S_ISDIR(st.st_mode))
        self.assertEqual((os.major(st.st_dev), os.minor(st.st_dev)), self.mount.device)
        [entry] = hangfsMountsAt(self.mount.mountpoint)
        self.assertEqual(entry.mountId, self.mount.mountId)
        self.assertEqual(os.listdir(self.mount.mountpoint), [])
        self.assertEqual(os.statvfs(self.mount.mountpoint).f_namemax, 255)
        self.assertEqual(self.mount.pending(), 0)

    def test_hangingStatBlocksUntilStop(self):
        """
        C{stat(hangingPath)} reaches the server and is still blocked a
        second later; C{stop} makes
        it fail with an L{OSError} within seconds, removes the mount and
        ends the server.
        """
        self.assertEqual(self.mount.hangingPath, os.path.join(self.mount.mountpoint, "hang"))
        caller = Caller(self.mount.hangingPath)
        self.assertTrue(self.mount.waitPending(1, SOON), "the lookup never reached the server")
        self.assertFalse(caller.done.wait(1.0), f"stat returned: {caller.result!r}")
        self.mount.stop()
        self.assertTrue(caller.done.wait(SOON), "stat still blocked after stop")
        self.assertIsInstance(caller.result, OSError)
        self.assertIn(caller.result.errno, (errno.ENOTCONN, errno.ECONNABORTED))
        self.assertEqual(hangfsMountsAt(self.mount.mountpoint), [])
        self.assertIsNotNone(self.mount.process.poll())

    def test_otherNamesServedWhileOneHangs(self):
        """
        While two callers are stuck on the hanging path, the server still
        answers other requests; C{stop} frees both callers.
        """
        stuck = [Caller(self.mount.hangingPath), Caller(self.mount.hangingPath)]
        self.assertTrue(self.mount.waitPending(1, SOON))
        other = Caller(os.path.join(self.mount.mountpoint, "other"))
        self.assertTrue(other.done.wait(SOON))
        self.assertIsInstance(other.result, FileNotFoundError)
        self.assertFalse(any(c.done.is_set() for c in stuck))
        self.mount.stop()
        for caller in stuck:
            self.assertTrue(caller.done.wait(SOON))
            self.assertIsInstance(caller.result, OSError)

    def test_stopTwice(self):
        """
        C{stop} twice is fine and the second does nothing; nothing is left:
        no mount, no server, and the directory the mount made is gone.
        """
        where = os.path.abspath(self.mktemp())
        os.mkdir(where)
        mount = startOrSkip(HangingMount(os.path.join(where, "made")), self)
        mount.stop()
        mount.stop()
        self.assertEqual(hangfsMountsAt(mount.mountpoint), [])
        self.assertFalse(processAlive(mount.process.pid))
        self.assertFalse(os.path.exists(mount.mountpoint))

    def test_startsOnce(self):
        """
        A second C{start} is refused (a stopped mount cannot come back).
        """
        self.assertRaises(hangfs.HangFSError, self.mount.start)
        self.mount.stop()
        self.assertRaises(hangfs.HangFSError, self.mount.start)

    def test_forkedChildLeavesMountAlone(self):
        """
        A forked child of the owner that calls C{stop}, or exits through the
        exit hook, does not touch the owner's mount.
        """
        pid = os.fork()
        if pid == 0:
            try:
                self.mount.stop()
                hangfs._stopAll()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        self.assertTrue(self.mount.mounted())
        self.assertIsNone(self.mount.process.poll())
        self.assertRaises(FileNotFoundError, os.stat, os.path.join(self.mount.mountpoint, "x"))

    def test_signalDoesNotFreeStuckCaller(self):
        """
        Like a hard NFS mount (and unlike C{interruptible=True}), a process
        stuck in C{stat(hangingPath)} stays stuck even after C{SIGKILL}
        until the mount is stopped; then it is gone at once.
        """
        child = statChild(self, self.mount)
        self.assertTrue(self.mount.waitPending(1, SOON))
        child.kill()
        self.assertFalse(waitFor(lambda: child.poll() is not None, 1.0), "killed while stuck")
        self.assertEqual(self.mount.pending(), 1)
        self.mount.stop()
        self.assertEqual(child.wait(SOON), -signal.SIGKILL)


class InterruptibleTests(SynchronousTestCase):
    """
    A mount made with C{interruptible=True}.
    """

    def test_killFreesStuckCaller(self):
        """
        C{SIGKILL} ends a process stuck in C{stat(hangingPath)} at once (the
        server answers the interrupt and drops the lookup); the mount stays
        up and keeps answering.
        """
        self.mount = startOrSkip(
            HangingMount(os.path.abspath(self.mktemp()), interruptible=True), self
        )
        child = statChild(self, self.mount)
        self.assertTrue(self.mount.waitPending(1, SOON))
        self.assertIsNone(child.poll())
        child.kill()
        self.assertEqual(child.wait(SOON), -signal.SIGKILL)
        self.assertTrue(self.mount.mounted())
        self.assertEqual(self.mount.pending(), 0)
        self.assertRaises(FileNotFoundError, os.stat, os.path.join(self.mount.mountpoint, "x"))


class ControlFileTests(SynchronousTestCase):
    """
    Aborting through C{fusectl}'s C{abort} file.
    """

    def test_abortThroughControlFile(self):
        """
        With C{fusectl} mounted, the connection's directory is named by the
        mount's device, and writing its C{abort} file frees a stuck caller;
        the server, its connection gone, detaches the mount and exits by
        itself.
        """
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root")
        control = os.path.abspath(self.mktemp())
        os.mkdir(control)
        try:
            hangfs._mount("fusectl", control, "fusectl", 0, "")
        except OSError as e:
            raise unittest.SkipTest(f"cannot mount fusectl: {e.strerror}")
        self.addCleanup(hangfs._umount2, control, hangfs.MNT_DETACH)
        mount = startOrSkip(HangingMount(os.path.abspath(self.mktemp()), controlDir=control), self)
        self.assertTrue(os.path.isdir(os.path.join(control, str(mount.connection))))
        caller = Caller(mount.hangingPath)
        self.assertTrue(mount.waitPending(1, SOON))
        self.assertEqual(mount._abortConnection(), "control")
        self.assertTrue(caller.done.wait(SOON), "stat still blocked after abort")
        self.assertIsInstance(caller.result, OSError)
        self.assertEqual(mount.process.wait(SOON), 0)
        self.assertFalse(mount.mounted())


OWNER = """
import os, sys, threading
from sysmon.hangfs import HangingMount
mount = HangingMount(sys.argv[1])
mount.start()
daemon = sys.argv[2] != "nondaemon"
threading.Thread(target=os.stat, args=(mount.hangingPath,), daemon=daemon).start()
assert mount.waitPending(1, 15)
print(mount.process.pid, flush=True)
sys.stdin.readline()
if sys.argv[2] == "kill":
    os.kill(os.getpid(), 9)
sys.exit(0)
"""


class OwnerExitTests(SynchronousTestCase):
    """
    A process that owns a mount and has a thread stuck on it exits cleanly
    however it ends, and leaves no mount or server behind.
    """

    def owner(self, how: str) -> None:
        if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
            raise unittest.SkipTest("needs root and /dev/fuse")
        where = os.path.abspath(self.mktemp())
        os.mkdir(where)
        env = dict(os.environ, PYTHONPATH=REPO)
        proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, where, how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        server: list[int] = []

        def end() -> None:
            for pid in server:
                if processAlive(pid):
                    os.kill(pid, signal.SIGKILL)
            detachLeftovers(where)
            if proc.poll() is None:
                proc.kill()
            proc.wait(SOON)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                pipe.close()

        self.addCleanup(end)
        line = proc.stdout.readline()
        if not line:
            err = proc.communicate(timeout=10)[1].decode()
            if "FuseUnavailable" in err:
                raise unittest.SkipTest(err.strip().splitlines()[-1])
            self.fail(f"owner failed: {err}")
        server.append(int(line))
        self.assertEqual(len(hangfsMountsAt(where)), 1)
        self.assertTrue(processAlive(server[0]))
        proc.stdin.close()
        proc.wait(SOON)
        self.assertTrue(waitFor(lambda: not processAlive(server[0]), SOON), "server outlived its owner")
        self.assertEqual(hangfsMountsAt(where), [])

    def test_exitWithoutStop(self):
        """
        An owner that exits without calling C{stop} (the C{atexit} hook
        does it) exits within seconds.
        """
        self.owner("exit")

    def test_exitWithStuckNonDaemonThread(self):
        """
        An owner whose main thread returns while a non-daemon thread is
        stuck (the interpreter would join it for ever) exits within seconds:
        the exit hook stops the mount before that join.
        """
        self.owner("nondaemon")

    def test_killedOwner(self):
        """
        A C{SIGKILL}ed owner is reaped within seconds: the server sees its
        owner gone, which frees the stuck thread, detaches the mount and
        exits.
        """
        self.owner("kill")
