"""
The LDAP host directory in the real daemons: a real C{slapd} (the
L{tests.directory.slapd} fixture) with C{twistd -n netdump} and
C{netdump-sim} clients, and C{twistd -n recvstats} with C{sendstats}, all
over loopback.  The daemons get the directory with C{--directory URL} and
C{--directory-config FILE} (bind DN, password file, CA file, timeouts), as
an operator gives it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from sysmon.beostat import shm
from sysmon.testing import freePort, makeTestCA

from ..beostat.test_live import Pair, readRecord, waitFor
from ..netdump.live import ROOT, LiveServer, Sim
from .slapd import HOSTS, READER, Slapd

#: The magic of the LDAP-only netdump client.
MAGIC = 0x0123456789ABCDEF
#: A small, quick dump: 2 MiB, no holes, mostly zero pages.
SMALL_DUMP = ("--memory", "2M", "--holes", "", "--zero-fraction", "0.5")


def warnings(log: str) -> list[str]:
    """
    The warnings (and worse) in a twistd log.
    """
    return [line for line in log.splitlines()
            if re.search(r"#(warn|error|critical)\]", line)]


def settingsFile(case: SynchronousTestCase, slapd: Slapd, url: str | None = None,
                 password: str | None = None, caFile: str | None = None,
                 **extra: object) -> str:
    """
    A directory settings file for C{slapd}: its URL (or C{url}), the hosts'
    base, bound as L{READER} with a password file (the right password, or
    C{password}), a short timeout and retry, and C{extra} keys.

    @return: its path.
    """
    lines = {
        "url": url or slapd.url,
        "base": HOSTS,
        "bind_dn": READER,
        "password_file": slapd.passwordFile() if password is None
        else slapd.passwordFile(password),
        "timeout": 2,
        "retry": 1,
    }
    if caFile is not None:
        lines["ca_file"] = caFile
    lines.update(extra)
    path = os.path.abspath(case.mktemp()) + ".conf"
    with open(path, "w") as f:
        for key, value in lines.items():
            f.write(f"{key} = {value}\n")
    return path


class NetdumpTests(SynchronousTestCase):
    """
    netdump's secure mode takes the client magics from LDAP.
    """

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.slapd.start()
        self.slapd.addHost("node02", "127.0.0.2", node=2, magic=MAGIC)
        self.slapd.addHost("node03", "127.0.0.3", node=3, magic=MAGIC ^ 1)
        self.dumpdir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dumpdir, "magic"))

    def crashDirs(self, ip: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.dumpdir, ip + "-*")))

    def assertDumped(self, sim: Sim, ip: str) -> None:
        """
        C{sim} ended well and left one complete dump of C{ip}.
        """
        self.assertEqual(sim.wait(60), 0, sim.err)
        [directory] = self.crashDirs(ip)
        with open(os.path.join(directory, "dump.json")) as f:
            self.assertEqual(json.load(f)["outcome"], "complete")

    def assertNoReply(self, sim: Sim, ip: str) -> None:
        """
        C{sim} gave up, never answered, and nothing was dumped for C{ip}.
        """
        self.assertEqual(sim.wait(60), 1, sim.err)
        self.assertIn("silent", sim.err)
        self.assertEqual(self.crashDirs(ip), [])

    def warnings(self, log: str, count: int) -> list[str]:
        """
        The warnings in C{log}, checked to be C{count}.
        """
        found = warnings(log)
        self.assertEqual(len(found), count, "\n".join(found) or log[-3000:])
        return found

    def server(self, *args: str) -> LiveServer:
        return LiveServer(self, self.dumpdir, *args).start()

    def test_magicFromLDAP(self) -> None:
        """
        A client whose magic is only in LDAP (no magic/<ip> file) dumps in
        secure mode; one whose LDAP magic differs from the one it sends gets
        no reply at all to its repeated STARTs, and the server's only
        warning says why once, naming the client.  The directory is given
        as C{--directory URL} whose path (the base DN) overrides the
        settings file's wrong base.
        """
        config = settingsFile(self, self.slapd, base="ou=nowhere,dc=sysmon,dc=test")
        server = self.server("--directory", f"{self.slapd.url}/{HOSTS}",
                             "--directory-config", config)
        good = Sim(self, server, *SMALL_DUMP, "--magic", f"{MAGIC:016x}",
                   "--idle-timeout", "30", bind="127.0.0.2")
        bad = Sim(self, server, *SMALL_DUMP, "--magic", f"{MAGIC:016x}",
                  "--idle-timeout", "2", bind="127.0.0.3")
        self.assertDumped(good, "127.0.0.2")
        self.assertNoReply(bad, "127.0.0.3")
        self.assertEqual(os.listdir(os.path.join(self.dumpdir, "magic")), [])
        server.stop()  # it logs its counters
        log = server.log()
        [warning] = self.warnings(log, 1)
        self.assertRegex(warning, r"ignoring netdump START from 127\.0\.0\.3:\d+ in secure "
                                  r"mode: its magic is wrong$")
        badStarts = re.search(r"'bad_magic': (\d+)", log)
        self.assertIsNotNone(badStarts, log[-2000:])
        self.assertGreaterEqual(int(badStarts.group(1)), 2)

    def test_ldapsWithTestCA(self) -> None:
        """
        The same over C{ldaps://} with the test CA in C{ca_file}: the LDAP
        magic lets the client dump.
        """
        config = settingsFile(self, self.slapd, url=self.slapd.ldapsURL,
                              caFile=self.slapd.caFile)
        server = self.server("--directory-config", config)
        good = Sim(self, server, *SMALL_DUMP, "--magic", f"{MAGIC:016x}",
                   "--idle-timeout", "30", bind="127.0.0.2")
        self.assertDumped(good, "127.0.0.2")

    def test_slapdDownAtStart(self) -> None:
        """
        netdump started while slapd is stopped runs, and its log has one
        warning, the directory's: it cannot answer.  A client with a magic
        file dumps.  One known only to LDAP gets no reply (bounded) while
        slapd is down; the only other warning is netdump's rate-limited one
        naming that client and why.  Once slapd is back, the LDAP-only
        client dumps (the directory tries the server again after its retry
        interval), with no new warning.
        """
        with open(os.path.join(self.dumpdir, "magic", "127.0.0.4"), "w") as f:
            f.write("00000000000000aa\n")
        config = settingsFile(self, self.slapd)
        self.slapd.stop()
        server = self.server("--directory-config", config)
        filed = Sim(self, server, *SMALL_DUMP, "--magic", "00000000000000aa",
                    "--idle-timeout", "30", bind="127.0.0.4")
        self.assertDumped(filed, "127.0.0.4")
        [warning] = self.warnings(server.log(), 1)
        self.assertIn(f"host directory {self.slapd.url} cannot answer:", warning)
        self.assertIn("Connection refused", warning)
        unknown = Sim(self, server, *SMALL_DUMP, "--magic", f"{MAGIC:016x}",
                      "--idle-timeout", "2", bind="127.0.0.2")
        self.assertNoReply(unknown, "127.0.0.2")
        [_, ignored] = self.warnings(server.log(), 2)
        self.assertIn("ignoring netdump START from 127.0.0.2:", ignored)
        self.assertIn("the host directory cannot answer (unknown host", ignored)
        self.assertIsNone(server.process.poll())
        self.slapd.start()
        # The client sends START again each second: one after the directory's
        # retry interval (1 s here) gets the server's answer.
        good = Sim(self, server, *SMALL_DUMP, "--magic", f"{MAGIC:016x}",
                   "--idle-timeout", "30", bind="127.0.0.2")
        self.assertDumped(good, "127.0.0.2")
        self.warnings(server.log(), 2)
        self.assertIn("is back after", server.log())


class StartErrorTests(SynchronousTestCase):
    """
    A directory that refuses netdump is a clear one-line error at start.
    """

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.slapd.start()

    def netdump(self, config: str) -> tuple[int, str, str]:
        """
        Run C{twistd -n netdump --directory-config config} to its end,
        which must come within 20 s (the settings' lookup timeout is 2 s).

        @return: its exit status, its output (stdout and stderr), and its
            log file's text (empty if it wrote none).
        """
        dumpdir = os.path.abspath(self.mktemp())
        os.makedirs(dumpdir)
        logFile = os.path.join(dumpdir, "twistd.log")
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "--logfile", logFile, "netdump",
             "--port", str(freePort()), "--addr", "127.0.0.1", "--dumpdir", dumpdir,
             "--config", os.devnull, "--directory-config", config],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def stop() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(15)
        self.addCleanup(stop)
        out, _ = process.communicate(timeout=30)
        self.assertLess(time.monotonic() - started, 20, out)
        log = ""
        if os.path.exists(logFile):
            with open(logFile) as f:
                log = f.read()
        return process.returncode, out, log

    def assertOneLineError(self, result: tuple[int, str, str], *fragments: str) -> None:
        """
        The daemon failed, and its message is one line, the last it wrote
        (after twistd's usage text), holding every fragment; no traceback
        in its output or its log.
        """
        code, out, log = result
        self.assertNotEqual(code, 0, out)
        self.assertNotIn("Traceback", out + log)
        last = out.strip().splitlines()[-1] if out.strip() else ""
        for fragment in fragments:
            self.assertIn(fragment, last, out)
        self.assertEqual(sum(fragments[0] in line for line in out.splitlines()), 1, out)

    def test_wrongPassword(self) -> None:
        """
        A wrong bind password: netdump exits non-zero at once with a line
        naming the server, the bind DN and the invalid credentials; no
        traceback.
        """
        result = self.netdump(settingsFile(self, self.slapd, password="not-the-password"))
        self.assertOneLineError(result, "invalid credentials", READER, self.slapd.url)

    def test_untrustedCA(self) -> None:
        """
        C{ldaps://} with the CA file of another test CA: netdump exits
        non-zero at once with a line naming the server and the CA file and
        saying the certificate is not trusted; no traceback.
        """
        other = makeTestCA(os.path.abspath(self.mktemp()))
        result = self.netdump(settingsFile(self, self.slapd, url=self.slapd.ldapsURL,
                                           caFile=other.caCert))
        self.assertOneLineError(result, "not trusted", other.caCert, self.slapd.ldapsURL)


class RecvstatsTests(SynchronousTestCase):
    """
    recvstats takes node numbers from LDAP for senders that give none.
    """

    def test_nodeNumberFromLDAP(self) -> None:
        """
        sendstats with node -1 (its default) reporting to recvstats over
        loopback unicast is filed under the C{sysmonNodeNumber} of the
        entry whose C{ipHostNumber} is the sender's source address
        (127.0.0.1: loopback datagrams leave from the primary loopback
        address); nothing else is in the file, and the log says the number
        came from the directory.
        """
        slapd = Slapd(self)
        slapd.start()
        slapd.addHost("sender", "127.0.0.1", node=42)
        slapd.addHost("other", "127.0.0.2", node=7)
        pair = Pair(self)
        port = freePort()
        pair.startRecv("--no-multicast", "--bind", "127.0.0.1", "-p", str(port),
                       "--directory", slapd.url,
                       "--directory-config", settingsFile(self, slapd))
        pair.startSend("--master", f"127.0.0.1:{port}", "-r", "1")
        record = waitFor(lambda: readRecord(pair.shm, 42), 15)
        self.assertIsNotNone(record, pair.recv.log()[-3000:])
        pair.checkRecord(record)
        self.assertEqual((record.address, record.origin), ("127.0.0.1", 1))
        file = shm.ShmFile(pair.shm)
        self.addCleanup(file.close)
        filed = [n for n in file.nodes() if file.read(n).state != shm.EMPTY]
        self.assertEqual(filed, [42])
        self.assertIn("127.0.0.1 is node 42 (from the directory)", pair.recv.log())

    def test_provisionalNumberMoves(self) -> None:
        """
        recvstats started while slapd is down files a node -1 sender under
        a provisional number; once slapd is back, the sender's next report
        after the retry interval asks again and the node moves to its LDAP
        number: the file then has it there only.
        """
        slapd = Slapd(self)
        slapd.start()
        slapd.addHost("sender", "127.0.0.1", node=42)
        config = settingsFile(self, slapd)
        slapd.stop()
        pair = Pair(self)
        port = freePort()
        pair.startRecv("--no-multicast", "--bind", "127.0.0.1", "-p", str(port),
                       "--directory-config", config)
        pair.startSend("--master", f"127.0.0.1:{port}", "-r", "1")
        first = waitFor(lambda: readRecord(pair.shm, 0), 15)
        self.assertIsNotNone(first, pair.recv.log()[-3000:])
        self.assertEqual((first.address, first.origin), ("127.0.0.1", 3))
        self.assertIn("127.0.0.1 is node 0 (first free number, provisionally", pair.recv.log())
        slapd.start()
        moved = waitFor(lambda: readRecord(pair.shm, 42), 15)
        self.assertIsNotNone(moved, pair.recv.log()[-3000:])
        self.assertEqual((moved.address, moved.origin), ("127.0.0.1", 1))
        self.assertIn("127.0.0.1 moves from node 0 (provisional) to node 42 (from the directory)",
                      pair.recv.log())
        file = shm.ShmFile(pair.shm)
        self.addCleanup(file.close)
        filed = [n for n in file.nodes() if file.read(n).state != shm.EMPTY]
        self.assertEqual(filed, [42])
