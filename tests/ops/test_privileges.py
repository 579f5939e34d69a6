"""
The shipped tac run as root with twistd's C{--uid}/C{--gid}: ports below
1024 and netdump's 6666 are bound before privileges are dropped, and the
daemons then serve as the unprivileged user.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import socket
import subprocess
import sys
import sysconfig

from twisted.trial.unittest import SkipTest, TestCase

from sysmon.testing import processAlive
from tests.ops.tac import CHECKOUT, Tac
from tests.statd.live import smStat


def _freeReservedPort() -> int:
    """
    A port below 1024 free for both UDP and TCP on 127.0.0.1.
    """
    for port in range(1023, 600, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024")


def _ids(pid: int) -> tuple[list[int], list[int], list[int]]:
    """
    The real, effective, saved and file-system uids and gids of C{pid}, and
    its supplementary groups.
    """
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                fields[key] = [int(v) for v in value.split()]
    return fields["Uid"], fields["Gid"], fields["Groups"]


def _interpreterFor(uid: int, gid: int) -> tuple[str, str]:
    """
    An interpreter of this Python version that the user can run the tac
    with, and the C{PYTHONPATH} for it (the checkout and this environment's
    packages).  This one, unless the user cannot read its standard library
    (a Python installed under C{/root}, as pyenv does), in which case the
    system's, which then finds its modules the same way.

    @raise AssertionError: there is none.
    """
    path = os.pathsep.join([CHECKOUT, sysconfig.get_paths()["purelib"]])
    version = "%d.%d" % sys.version_info[:2]
    tried = []
    for python in (sys.executable, f"/usr/bin/python{version}"):
        # Started as root and switching in the process, as twistd does.
        probe = subprocess.run(
            [python, "-c",
             f"import os, sys; os.setgroups([]); os.setgid({gid}); os.setuid({uid}); "
             "import encodings.ascii, sqlite3, sysmon.ops.app; "
             "print('%d.%d' % sys.version_info[:2])"],
            env={"PYTHONPATH": path, "PATH": os.environ.get("PATH", "")}, cwd="/",
            capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return python, path
        tried.append(f"{python}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    raise AssertionError("no Python " + version + " the unprivileged user can run: "
                         + "; ".join(tried))


class PrivilegeTests(TestCase):
    """
    C{twistd --uid nobody --gid nogroup -ny conf/sysmon.tac}, started as root.
    """

    def setUp(self) -> None:
        if os.getuid() != 0:
            raise SkipTest("needs root: twistd must bind ports below 1024 and switch uid")
        try:
            self.user = pwd.getpwnam("nobody")
            self.group = grp.getgrnam("nogroup")
        except KeyError:
            raise SkipTest("no user nobody or group nogroup on this machine")

    def test_droppedAfterBinding(self) -> None:
        """
        statd answers SM_STAT on a port below 1024 and netdump takes a whole
        dump on 6666, while every uid and gid of the process (real,
        effective, saved, file system) is the unprivileged user's, it keeps no
        supplementary group but that one, and the dump's files belong to that user.
        """
        statdPort = _freeReservedPort()
        tac = Tac(self, {"statd": {"port": str(statdPort)}, "netdump": {"port": "6666"}})
        # The state directory belongs to the daemon's user, as systemd's
        # StateDirectory= would make it.
        os.makedirs(tac.path("var"))
        os.chown(tac.path("var"), self.user.pw_uid, self.group.gr_gid)
        os.chmod(tac.root, 0o755)
        python, path = _interpreterFor(self.user.pw_uid, self.group.gr_gid)
        tac.start(["--uid", "nobody", "--gid", "nogroup"], python=python,
                  env={**os.environ, "PYTHONPATH": path})
        self.assertTrue(processAlive(tac.pid))

        uids, gids, groups = _ids(tac.pid)
        self.assertEqual(uids, [self.user.pw_uid] * 4)
        self.assertEqual(gids, [self.group.gr_gid] * 4)
        self.assertEqual(set(groups) - {self.group.gr_gid}, set())
        self.assertLess(statdPort, 1024)
        self.assertEqual(smStat(statdPort) % 2, 1)

        sim = subprocess.run(
            [sys.executable, "-m", "sysmon.netdump.sim", "--port", "6666", "--memory", "2M",
             "--no-progress"],
            cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": CHECKOUT})
        self.assertEqual(sim.returncode, 0, sim.stdout + sim.stderr)
        [vmcore] = glob.glob(tac.path("var", "crash", "127.0.0.1-*", "vmcore"))
        self.assertEqual(os.stat(vmcore).st_uid, self.user.pw_uid)
        self.assertEqual(os.stat(vmcore).st_size > 2 * 1024 * 1024 - 640 * 1024, True)
        self.assertEqual(_ids(tac.pid)[0], [self.user.pw_uid] * 4)
        self.assertNotIn("Traceback", tac.log())
