"""
Integration tests: the real C{twistd netdump} and C{netdump-sim} processes
over loopback (127.0.0.0/8 only), and the vmcore checked with
C{netdump-sim --verify} and binutils' readelf.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shutil
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from .captures import available, capture
from .live import LiveServer, Sim, simVerify


def dumpInfo(directory):
    with open(os.path.join(directory, "dump.json")) as f:
        return json.load(f)


class LiveTestCase(SynchronousTestCase):
    def dumpdir(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def crashDirs(self, dumpdir, ip):
        return sorted(glob.glob(os.path.join(dumpdir, ip + "-*")))

    def assertVerifies(self, directory, *simArgs):
        code, report = simVerify(directory, *simArgs)
        self.assertEqual(code, 0, report)
        self.assertIn("OK:", report)

    def readelf(self, path):
        if shutil.which("readelf") is None:
            raise self.skipTest("readelf (binutils) is not installed")
        return subprocess.run(["readelf", "-W", "-h", "-l", "-n", path], capture_output=True,
                              text=True, check=True).stdout

    def assertSparse(self, path, fraction):
        st = os.stat(path)
        self.assertLess(st.st_blocks * 512, st.st_size * fraction,
                        f"{st.st_blocks * 512} bytes allocated of {st.st_size}")


class DumpTests(LiveTestCase):
    """
    Whole dumps over loopback.
    """

    def test_x86_64_256MiB(self):
        """
        A 256 MiB x86_64 dump with reserved holes, 10% zero pages and 1% of
        fragments dropped lands as <dumpdir>/127.0.0.1-<date>/ with vmcore,
        log and dump.json; it verifies; readelf shows ET_CORE, PT_NOTE first
        with the three notes and PT_LOADs aligned 0x1000 that skip the
        holes; the file is sparse.
        """
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        args = ["--memory", "256M", "--zero-fraction", "0.1", "--drop", "0.01", "--seed", "11"]
        sim = Sim(self, server, *args, "--idle-timeout", "60")
        self.assertEqual(sim.wait(), 0, sim.err)
        [directory] = self.crashDirs(dumpdir, "127.0.0.1")
        self.assertRegex(os.path.basename(directory), r"^127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d$")
        self.assertEqual(sorted(os.listdir(directory)), ["dump.json", "log", "vmcore"])
        info = dumpInfo(directory)
        self.assertEqual(info["outcome"], "complete")
        self.assertEqual(info["nr_pages"], 65536)
        self.assertVerifies(directory, *args)
        out = self.readelf(os.path.join(directory, "vmcore"))
        self.assertIn("CORE (Core file)", out)
        self.assertIn("ELF64", out)
        segments = [l.split() for l in out.splitlines() if re.match(r"^\s+(NOTE|LOAD)\s", l)]
        self.assertEqual(segments[0][0], "NOTE")
        loads = segments[1:]
        self.assertEqual({l[0] for l in loads}, {"LOAD"})
        self.assertEqual({l[-1] for l in loads}, {"0x1000"})
        # The holes (640 KiB-1 MiB and 128-129 MiB) are not in any segment.
        spans = [(int(l[3], 16), int(l[3], 16) + int(l[4], 16)) for l in loads]
        self.assertEqual(spans, [(0, 0xA0000), (0x100000, 0x8000000), (0x8100000, 0x10000000)])
        for note in ("NT_PRSTATUS", "NT_PRPSINFO", "NT_TASKSTRUCT"):
            self.assertIn(note, out)
        self.assertSparse(os.path.join(directory, "vmcore"), 0.95)
        with open(os.path.join(directory, "log"), "rb") as f:
            log = f.read()
        self.assertIn(b"Kernel panic", log)
        self.assertIn(b"Show State", log)

    def test_i386_v4(self):
        """
        An i386 client speaking protocol 4 (holes as zero pages): ELF32 core
        that verifies, with one PT_LOAD aligned 0x1000, sparse.
        """
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        args = ["--machine", "i386", "--protocol", "4", "--memory", "64M", "--drop", "0.01"]
        sim = Sim(self, server, *args, "--idle-timeout", "60")
        self.assertEqual(sim.wait(), 0, sim.err)
        [directory] = self.crashDirs(dumpdir, "127.0.0.1")
        self.assertVerifies(directory, *args)
        out = self.readelf(os.path.join(directory, "vmcore"))
        self.assertIn("ELF32", out)
        self.assertIn("Intel 80386", out)
        loads = [l.split() for l in out.splitlines() if l.strip().startswith("LOAD")]
        self.assertEqual(len(loads), 1)
        self.assertEqual(loads[0][-1], "0x1000")
        for note in ("NT_PRSTATUS", "NT_PRPSINFO", "NT_TASKSTRUCT"):
            self.assertIn(note, out)
        self.assertSparse(os.path.join(directory, "vmcore"), 0.95)

    def test_16KiBPages(self):
        """
        16 KiB pages: PT_LOADs aligned 0x4000 skipping the holes; verifies.
        """
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        args = ["--machine", "ia64", "--page-size", "16K", "--memory", "64M", "--drop", "0.01"]
        sim = Sim(self, server, *args, "--idle-timeout", "60")
        self.assertEqual(sim.wait(), 0, sim.err)
        [directory] = self.crashDirs(dumpdir, "127.0.0.1")
        self.assertVerifies(directory, *args)
        out = self.readelf(os.path.join(directory, "vmcore"))
        loads = [l.split() for l in out.splitlines() if l.strip().startswith("LOAD")]
        self.assertEqual(len(loads), 3)
        self.assertEqual({l[-1] for l in loads}, {"0x4000"})

    def test_sixClientsConcurrentFour(self):
        """
        Six clients (127.0.0.2-7) crash at once with --concurrent 4: four
        dumps complete, two are rebooted without a dump; all six are logged.
        """
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0", "--concurrent", "4").start()
        # Hold the first four in netdump-crash a moment so all six overlap.
        scripts = os.path.join(dumpdir, "scripts")
        os.makedirs(scripts)
        with open(os.path.join(scripts, "netdump-crash"), "w") as f:
            f.write("#!/bin/sh\nsleep 2\nexit 0\n")
        os.chmod(os.path.join(scripts, "netdump-crash"), 0o755)
        sims = [Sim(self, server, "--memory", "32M", "--idle-timeout", "60",
                    bind=f"127.0.0.{i}") for i in range(2, 8)]
        for sim in sims:
            self.assertEqual(sim.wait(), 0, sim.err)
        outcomes = {}
        for i in range(2, 8):
            [directory] = self.crashDirs(dumpdir, f"127.0.0.{i}")
            outcomes[i] = dumpInfo(directory)["outcome"]
        self.assertEqual(sorted(outcomes.values()), ["complete"] * 4 + ["too-many-dumps"] * 2)
        log = server.log()
        self.assertEqual(log.count("too many concurrent dumps"), 2)
        self.assertEqual(len(re.findall(r"127\.0\.0\.\d:\d+ crashed", log)), 4)

    def test_secureMode(self):
        """
        Secure mode: the client whose magic is in magic/<ip> dumps; one with
        a wrong magic gets no reply at all (it never leaves its handshake).
        """
        dumpdir = self.dumpdir()
        os.makedirs(os.path.join(dumpdir, "magic"))
        for ip in ("127.0.0.2", "127.0.0.3"):
            with open(os.path.join(dumpdir, "magic", ip), "w") as f:
                f.write("0123456789abcdef\n")
        server = LiveServer(self, dumpdir).start()
        good = Sim(self, server, "--memory", "16M", "--magic", "0123456789abcdef",
                   "--idle-timeout", "30", bind="127.0.0.2")
        bad = Sim(self, server, "--memory", "16M", "--magic", "0123456789abcdee",
                  "--idle-timeout", "4", bind="127.0.0.3")
        self.assertEqual(good.wait(), 0, good.err)
        self.assertEqual(bad.wait(), 1, bad.err)
        self.assertIn("silent", bad.err)
        self.assertEqual(len(self.crashDirs(dumpdir, "127.0.0.2")), 1)
        self.assertEqual(self.crashDirs(dumpdir, "127.0.0.3"), [])
        self.assertEqual(server.log().count("ignoring netdump START from 127.0.0.3"), 1)


class ScriptTests(LiveTestCase):
    """
    Real scripts.
    """

    def script(self, dumpdir, name, body):
        scripts = os.path.join(dumpdir, "scripts")
        os.makedirs(scripts, exist_ok=True)
        path = os.path.join(scripts, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)

    def test_scriptsSeeTheirArguments(self):
        """
        netdump-crash and netdump-reboot get the IP and directory;
        netdump-reboot runs when vmcore is complete and the server no longer
        holds it open.
        """
        dumpdir = self.dumpdir()
        self.script(dumpdir, "netdump-crash", 'echo "$@" > "$2/crash-args"\n')
        self.script(dumpdir, "netdump-reboot",
                    'echo "$@" > "$2/reboot-args"; ls "$2" > "$2/files-at-reboot";'
                    ' ls -l /proc/$PPID/fd > "$2/server-fds" 2>&1\n')
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        sim = Sim(self, server, "--memory", "16M", "--idle-timeout", "30")
        self.assertEqual(sim.wait(), 0, sim.err)
        [directory] = self.crashDirs(dumpdir, "127.0.0.1")

        def read(name):
            with open(os.path.join(directory, name)) as f:
                return f.read()

        self.assertEqual(read("crash-args").split(), ["127.0.0.1", directory])
        self.assertEqual(read("reboot-args").split(), ["127.0.0.1", directory])
        files = read("files-at-reboot").split()
        self.assertIn("vmcore", files)
        self.assertNotIn("vmcore-incomplete", files)
        fds = read("server-fds")
        self.assertIn("socket:", fds)  # it did list the server's descriptors
        self.assertNotIn("vmcore", fds)


    def test_slowScriptDoesNotDelayOthers(self):
        """
        While netdump-crash takes 15 s for one client, another client's dump
        runs to the end; the slow one dumps after its script.
        """
        dumpdir = self.dumpdir()
        self.script(dumpdir, "netdump-crash",
                    'if [ "$1" = 127.0.0.2 ]; then sleep 15; fi\nexit 0\n')
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        slow = Sim(self, server, "--memory", "16M", "--idle-timeout", "60", bind="127.0.0.2")
        server.waitLog("running netdump-crash 127.0.0.2")
        started = time.monotonic()
        fast = Sim(self, server, "--memory", "16M", "--idle-timeout", "60", bind="127.0.0.3")
        self.assertEqual(fast.wait(), 0, fast.err)
        self.assertLess(time.monotonic() - started, 12)
        self.assertIsNone(slow.process.poll())
        self.assertEqual(dumpInfo(self.crashDirs(dumpdir, "127.0.0.3")[0])["outcome"], "complete")
        self.assertEqual(slow.wait(), 0, slow.err)
        self.assertEqual(dumpInfo(self.crashDirs(dumpdir, "127.0.0.2")[0])["outcome"], "complete")


class RestartTests(LiveTestCase):
    """
    Surviving the server's death.
    """

    def test_sigkillAndResume(self):
        """
        The server killed with SIGKILL in the middle of a dump and started
        again finishes the same dump, and it verifies.
        """
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        args = ["--memory", "256M", "--seed", "5"]
        sim = Sim(self, server, *args, "--idle-timeout", "60")
        server.waitLog("30% of pages received", timeout=120)
        server.kill()
        [directory] = self.crashDirs(dumpdir, "127.0.0.1")
        self.assertIn(".netdump-session.json", os.listdir(directory))
        self.assertIn("vmcore-incomplete", os.listdir(directory))
        again = LiveServer(self, dumpdir, "--secure", "0", port=server.port).start()
        self.assertEqual(sim.wait(), 0, sim.err)
        self.assertIn("resuming the dump of 127.0.0.1", again.log())
        self.assertEqual(self.crashDirs(dumpdir, "127.0.0.1"), [directory])
        self.assertEqual(dumpInfo(directory)["outcome"], "complete")
        self.assertVerifies(directory, *args)

    def test_silentClient(self):
        """
        A client that goes silent leaves vmcore-incomplete; dump.json says
        incomplete; the server logs it and forgets the session.
        """
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0", "--timeout", "0.2",
                            "--retries", "5").start()
        sim = Sim(self, server, "--memory", "512M", "--idle-timeout", "60")
        server.waitLog("10% of pages received", timeout=60)
        sim.stop()
        server.waitLog("went silent", timeout=30)
        server.waitLog("dump finished: incomplete", timeout=30)
        [directory] = self.crashDirs(dumpdir, "127.0.0.1")
        self.assertEqual(dumpInfo(directory)["outcome"], "incomplete")
        self.assertIn("vmcore-incomplete", os.listdir(directory))
        self.assertNotIn(".netdump-session.json", os.listdir(directory))


class RobustnessTests(LiveTestCase):
    """
    Bad input and full disks.
    """

    def test_noiseDuringDump(self):
        """
        100 000 random and mutated datagrams from random ports while a dump
        is in progress: the dump completes and verifies, the server keeps
        serving, and packets from the wrong ip:port were ignored.
        """
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        args = ["--memory", "256M", "--seed", "9"]
        sim = Sim(self, server, *args, "--idle-timeout", "60")
        server.waitLog("dumping 127.0.0.1:", timeout=60)
        rng = random.Random(1)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        mem = b"\x05\x00\x00\x00\x10\x00\x00\x00\x03\x00\x00\x04\x00" + bytes(1024)
        samples = [mem, b"\x04" + bytes(4) + b"\x00\x00\x00\x02" + bytes(4) + b"log",
                   b"\x04" + bytes(4) + b"\x00\x00\x00\x08" + bytes(4) + b"task_struct:0x1",
                   b"14,1,1,-,ncfrag=0/9;abc", bytes(24)]
        try:
            for i in range(100_000):
                if i % 2:
                    data = bytearray(rng.choice(samples))
                    for _ in range(rng.randint(0, 3)):
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    data = bytes(data[: rng.randint(0, len(data))])
                else:
                    data = rng.randbytes(rng.randint(0, 1100))
                try:
                    rng.choice(socks).sendto(data, ("127.0.0.1", server.port))
                except OSError:
                    pass
                if i % 2000 == 0:
                    time.sleep(0.01)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(sim.wait(), 0, sim.err)
        [directory] = self.crashDirs(dumpdir, "127.0.0.1")
        self.assertVerifies(directory, *args)
        server.stop()
        log = server.log()
        self.assertNotIn("Traceback", log)
        counters = re.search(r"datagram counters: (\{.*\})", log).group(1)
        self.assertIn("'wrong_peer'", counters)

    def test_enospc(self):
        """
        On a file system that fills up (a small tmpfs), the dump that hits
        ENOSPC fails cleanly (no-space, vmcore-incomplete, client rebooted)
        while another client's dump completes.
        """
        if os.geteuid() != 0:
            raise self.skipTest("mounting a tmpfs needs root")
        dumpdir = self.dumpdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", dumpdir],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            raise self.skipTest(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", dumpdir])
        server = LiveServer(self, dumpdir, "--secure", "0", "--space-check", "0").start()
        small = Sim(self, server, "--memory", "64M", "--zero-fraction", "1", "--holes", "",
                    "--idle-timeout", "30", bind="127.0.0.2")
        big = Sim(self, server, "--memory", "64M", "--zero-fraction", "0",
                  "--idle-timeout", "30", bind="127.0.0.3")
        self.assertEqual(big.wait(), 0, big.err)
        self.assertEqual(small.wait(), 0, small.err)
        [bigDir] = self.crashDirs(dumpdir, "127.0.0.3")
        [smallDir] = self.crashDirs(dumpdir, "127.0.0.2")
        self.assertEqual(dumpInfo(bigDir)["outcome"], "no-space")
        self.assertIn("vmcore-incomplete", os.listdir(bigDir))
        self.assertEqual(dumpInfo(smallDir)["outcome"], "complete")
        self.assertIn("writing the dump of 127.0.0.3 failed", server.log())


class NetconsoleLiveTests(LiveTestCase):
    """
    Real netconsole datagrams on the netdump port.
    """

    def test_capturesReplayed(self):
        """
        The captured basic and extended streams, sent from two ports, end up
        in console/127.0.0.1.log.
        """
        if not available():
            raise self.skipTest("shared/data/netconsole is not beside the checkout")
        dumpdir = self.dumpdir()
        server = LiveServer(self, dumpdir, "--secure", "0").start()
        for name in ("basic", "ext"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                for i, data in enumerate(capture("6.12-release-userdata", name)):
                    s.sendto(data, ("127.0.0.1", server.port))
                    if i % 50 == 0:
                        time.sleep(0.005)
        path = os.path.join(dumpdir, "console", "127.0.0.1.log")
        deadline = time.monotonic() + 10
        text = b""
        while time.monotonic() < deadline and b"test line 20 of 20" not in text.split(b"host=probe")[-1]:
            time.sleep(0.1)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text = f.read()
        self.assertIn(b"Linux version 6.12", text)
        self.assertIn(b"sysrq: Trigger a crash", text)
        self.assertRegex(text, rb"\[\s+\d+\.\d{6}\] ncprobe: test line 20 of 20\n host=probe\n")
