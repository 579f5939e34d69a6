"""
Tests for the netdump server's policy (L{sysmon.netdump.server}), driven on
a fake reactor by emulated clients.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random

from twisted.trial.unittest import SynchronousTestCase

from sysmon.netdump import wire
from sysmon.netdump.server import ServerSettings
from sysmon.netdump.sim import Progress, verify
from sysmon.netdump.store import Vmcore
from sysmon.netdump.wire import COMM, REPLY
from sysmon.testing import LogCapture

from .harness import Bench, makeSim


def verified(client, directory, reservedHoles=True):
    out = io.StringIO()
    sim = client.sim
    code = verify(directory, sim.memory, sim.machine, 0 if sim.legacy else sim.taskStruct,
                  Progress(1, False), out=out, reservedHoles=reservedHoles)
    return code, out.getvalue()


def dumpInfo(directory):
    with open(os.path.join(directory, "dump.json")) as f:
        return json.load(f)


def requests(bench, ip, command):
    return [wire.Request.fromBytes(d) for d, a in bench.sent if a[0] == ip
            and wire.Request.fromBytes(d).command == command]


class DumpTests(SynchronousTestCase):
    """
    Whole dumps through the state machine.
    """

    def bench(self, **kw):
        bench = Bench(os.path.abspath(self.mktemp()), **kw)
        bench.start()
        return bench

    def dumpOne(self, bench, client, reservedHoles=True):
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        self.assertTrue(bench.idle())
        [directory] = bench.crashDirs(client.ip)
        code, report = verified(client, directory, reservedHoles)
        self.assertEqual(code, 0, report)
        return directory

    def test_x86_64(self):
        """
        An x86_64 client with holes and zero pages is dumped completely: the
        vmcore verifies page by page, dump.json says complete, the client is
        rebooted and the session is gone with no timer left.
        """
        bench = self.bench()
        client = bench.add("10.0.0.1")
        directory = self.dumpOne(bench, client)
        info = dumpInfo(directory)
        self.assertEqual(info["outcome"], "complete")
        self.assertEqual(info["client"], {"ip": "10.0.0.1", "port": 6666})
        self.assertEqual(info["page_size"], 4096)
        self.assertEqual(info["nr_pages"], 512)
        # The sim's default holes: 640 KiB-1 MiB and the MiB from the middle.
        self.assertEqual(info["reserved_ranges"], [[160, 512]])
        self.assertEqual(info["ram_pages_received"], client.sim.memory.ramPages())
        self.assertEqual(sorted(os.listdir(directory)), ["dump.json", "log", "vmcore"])
        self.assertEqual(os.stat(directory).st_mode & 0o777, 0o700)
        self.assertEqual([d for d in bench.reactor.getDelayedCalls() if "_tick" in repr(d.func)], [])

    def test_reservedRangesRecorded(self):
        """
        dump.json lists the reserved ranges the client announced.
        """
        bench = self.bench()
        client = bench.add("10.0.0.1", holes=[(10, 20), (300, 310)])
        directory = self.dumpOne(bench, client)
        self.assertEqual(dumpInfo(directory)["reserved_ranges"], [[10, 20], [300, 310]])

    def test_i386Version4(self):
        """
        An i386 client speaking version 4 (holes sent as zero pages) gives an
        ELF32 core with one PT_LOAD from physical 0.
        """
        bench = self.bench()
        client = bench.add("10.0.0.2", machine="i386", protocol=4)
        directory = self.dumpOne(bench, client, reservedHoles=False)
        with open(os.path.join(directory, "vmcore"), "rb") as f:
            self.assertEqual(f.read(5), b"\x7fELF\x01")
        self.assertEqual(dumpInfo(directory)["protocol_version"], 4)

    def test_legacyStart(self):
        """
        An early RHEL3 client (START with nr 0 and no magic) dumps in
        non-secure mode as i386.
        """
        bench = self.bench()
        client = bench.add("10.0.0.3", machine="i386", protocol=4, legacy=True)
        self.dumpOne(bench, client, reservedHoles=False)

    def test_16KiBPages(self):
        """
        16 KiB pages (16 fragments each) dump and verify.
        """
        bench = self.bench()
        client = bench.add("10.0.0.4", machine="ia64", pageSize=16384, memory=4 * 2**20)
        self.dumpOne(bench, client)

    def test_64KiBPagesPpc64(self):
        """
        64 KiB pages of a big-endian ppc64 client dump and verify.
        """
        bench = self.bench()
        client = bench.add("10.0.0.5", machine="ppc64", pageSize=65536, memory=8 * 2**20)
        self.dumpOne(bench, client)

    def test_lossyClient(self):
        """
        With 5% of fragments lost the dump still completes and verifies;
        lost pages are asked for again.
        """
        bench = self.bench()
        client = bench.add("10.0.0.6", drop=0.05)
        directory = self.dumpOne(bench, client)
        self.assertGreater(dumpInfo(directory)["pages_requested_again"], 0)
        self.assertGreater(client.sim.dropped, 0)

    def test_lossDetectedByOrder(self):
        """
        A page whose fragment was lost is asked for again as soon as a reply
        to a later request arrives, without waiting for the timeout.
        """
        bench = self.bench()
        client = bench.add("10.0.0.7", holes=[], zeroFraction=0)
        dropped = []
        times = []
        send = bench.server.send

        def timedSend(data, addr):
            times.append((bench.reactor.seconds(), wire.Request.fromBytes(data)))
            send(data, addr)

        bench.server.send = timedSend

        def lossy(reply):
            version, nr, code, info = wire._HEADER.unpack_from(reply)
            if code == REPLY.MEM and info == 1024 and not dropped and nr > 20:
                dropped.append(nr)
                return True
            return False

        client.lossy = lossy
        self.dumpOne(bench, client)
        [nr] = dropped
        [pfn] = [r.arg for t, r in times if r.nr == nr]
        asked = [t for t, r in times if r.command == COMM.SEND_MEM and r.arg == pfn]
        self.assertEqual(len(asked), 2)
        self.assertLess(asked[1] - asked[0], bench.settings.timeout)

    def test_silentClientIncomplete(self):
        """
        A client that goes silent in the middle is given up after the
        retries: vmcore-incomplete stays, dump.json says incomplete, the
        session and its timers are released, and no reboot is sent.
        """
        bench = self.bench()
        client = bench.add("10.0.0.8", memory=8 * 2**20)
        bench.crashAll(client)
        bench.run(lambda: client.sim.servedCount > 100, step=0.01)
        client.alive = False
        bench.run(bench.idle)
        [directory] = bench.crashDirs(client.ip)
        self.assertEqual(dumpInfo(directory)["outcome"], "incomplete")
        self.assertIn("vmcore-incomplete", os.listdir(directory))
        self.assertNotIn("vmcore", os.listdir(directory))
        self.assertNotIn(".netdump-session.json", os.listdir(directory))
        self.assertEqual(bench.reactor.getDelayedCalls()[0].func.__name__, "_consoleTick")
        self.assertEqual(len(bench.reactor.getDelayedCalls()), 1)
        self.assertEqual(requests(bench, client.ip, COMM.REBOOT), [])

    def test_quietLongerThanRetries(self):
        """
        With timeout times retries shorter than the console's quiet period,
        a client that has answered SHOW_STATE is still rebooted once its
        console is quiet, not given up as silent.
        """
        bench = self.bench(settings=ServerSettings(window=8, timeout=0.05, retries=3,
                                                   secure=False, quiet=1.0))
        logs = LogCapture(self)
        client = bench.add("10.0.0.12", memory=2**20)
        directory = self.dumpOne(bench, client)
        self.assertEqual(dumpInfo(directory)["outcome"], "complete")
        self.assertEqual(len(requests(bench, client.ip, COMM.REBOOT)), 1)
        self.assertEqual(logs.matching("went silent"), [])

    def test_lostAck(self):
        """
        If the ACK is lost the client keeps announcing; the server answers
        its repeated START with another ACK and the dump proceeds.
        """
        bench = self.bench()
        client = bench.add("10.0.0.9")
        real = client.sim.handle
        lost = []

        def handle(data):
            if wire.Request.fromBytes(data).command == COMM.START_NETDUMP_ACK and not lost:
                lost.append(data)
                return [], []
            return real(data)

        client.sim.handle = handle
        self.dumpOne(bench, client)
        self.assertEqual(len(lost), 1)
        self.assertGreaterEqual(len(requests(bench, client.ip, COMM.START_NETDUMP_ACK)), 2)
        self.assertEqual(bench.server.counters["start_repeat"], 1)

    def test_ackVersion(self):
        """
        The ACK carries server protocol version 5 in C{from}, sent to the
        port the START came from; the magic field holds the client's magic.
        """
        bench = self.bench()
        client = bench.add("10.0.0.10")
        client.port = 7777
        bench.crash(client)
        [(data, addr)] = bench.transport.written[:1]
        ack = wire.Request.fromBytes(data)
        self.assertEqual((ack.command, ack.arg, ack.magic), (COMM.START_NETDUMP_ACK, 5,
                                                              0x1111111111111111))
        self.assertEqual(addr, ("10.0.0.10", 7777))

    def test_wrongPeerIgnored(self):
        """
        Replies from the client's IP but another port, or from another IP,
        are ignored and counted; the dump is unaffected.
        """
        bench = self.bench()
        client = bench.add("10.0.0.11")
        bench.crashAll(client)
        bench.run(lambda: bench.server.sessions.get(client.ip) is not None
                  and bench.server.sessions[client.ip].state == "memory")
        session = bench.server.sessions[client.ip]
        nr = next(iter(session.outstanding))
        forged = wire.encodeReply(5, nr, REPLY.MEM, 0, b"X" * 1024)
        bench.deliver(forged, (client.ip, 9999))
        bench.deliver(forged, ("10.9.9.9", 6666))
        self.assertEqual(bench.server.counters["wrong_peer"], 1)
        self.assertEqual(bench.server.counters["no_session"], 1)
        self.assertEqual(session.outstanding[nr].got, 0)
        bench.run(lambda: client.sim.rebooted)
        [directory] = bench.crashDirs(client.ip)
        self.assertEqual(verified(client, directory)[0], 0)

    def test_noisyNeighbourDoesNotBreakDump(self):
        """
        Random and mutated datagrams from other ports of the same machine
        and from elsewhere, mixed into a dump, change nothing in it.
        """
        bench = self.bench()
        client = bench.add("10.0.0.12", memory=4 * 2**20)
        rng = random.Random(3)
        original = client.sim.handle

        def handle(data):
            replies, logs = original(data)
            for _ in range(3):
                if replies and rng.random() < 0.5:
                    junk = bytearray(rng.choice(replies))
                    for _ in range(rng.randint(1, 4)):
                        junk[rng.randrange(len(junk))] = rng.randrange(256)
                else:
                    junk = rng.randbytes(rng.randint(0, 1100))
                source = (client.ip, rng.randint(1, 65535)) if rng.random() < 0.5 else (
                    f"10.1.{rng.randint(0, 255)}.{rng.randint(1, 254)}", rng.randint(1, 65535))
                if source[1] == client.port:
                    continue
                bench.deliver(bytes(junk), source)
            return replies, logs

        client.sim.handle = handle
        self.dumpOne(bench, client)
        self.assertEqual(bench.server.counters["errors"], 0)


class SecureModeTests(SynchronousTestCase):
    """
    Secure mode: only clients whose magic is known may dump.
    """

    def bench(self):
        bench = Bench(os.path.abspath(self.mktemp()),
                      settings=ServerSettings(window=8, secure=True, retries=5, quiet=0.5))
        bench.start()
        os.makedirs(os.path.join(bench.root, "magic"))
        return bench

    def test_rightMagicDumps(self):
        """
        The magic in magic/<ip> (16 hex digits, high word first) lets the
        client dump.
        """
        bench = self.bench()
        with open(os.path.join(bench.root, "magic", "10.0.1.1"), "w") as f:
            f.write("0123456789abcdef\n")
        client = bench.add("10.0.1.1", magic=0x0123456789ABCDEF)
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        self.assertEqual(dumpInfo(bench.crashDirs(client.ip)[0])["outcome"], "complete")

    def test_wrongOrMissingMagicNoReply(self):
        """
        A wrong magic, or none on file, gets no reply at all, no directory,
        and one warning per client however often it announces itself.
        """
        bench = self.bench()
        logs = LogCapture(self)
        with open(os.path.join(bench.root, "magic", "10.0.1.2"), "w") as f:
            f.write("0123456789abcdef\n")
        wrong = bench.add("10.0.1.2", magic=0x0123456789ABCDEE)
        unknown = bench.add("10.0.1.3")
        bench.crashAll(wrong, unknown)
        bench.run(lambda: False if bench.reactor.seconds() < 5 else True)
        self.assertEqual(bench.transport.written, [])
        self.assertEqual(bench.crashDirs("10.0.1.2") + bench.crashDirs("10.0.1.3"), [])
        warnings = [t for t in logs.texts() if "secure mode" in t]
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("10.0.1.2:6666", "".join(warnings))
        self.assertIn("its magic is wrong", "".join(warnings))
        self.assertIn("no magic is known", "".join(warnings))
        self.assertGreaterEqual(bench.server.counters["bad_magic"], 8)

    def test_legacyClientRefused(self):
        """
        A legacy client sends no magic: refused in secure mode.
        """
        bench = self.bench()
        client = bench.add("10.0.1.4", machine="i386", legacy=True, protocol=4)
        bench.crash(client)
        self.assertEqual(bench.transport.written, [])

    def test_hostDirectoryMagic(self):
        """
        A magic from the host directory is used when magic/<ip> is missing.
        """
        from sysmon.directory.file import FileHostDirectory

        bench = self.bench()
        hosts = os.path.join(bench.root, "hosts")
        with open(hosts, "w") as f:
            f.write("n1 10.0.1.5 magic=00000000deadbeef\n")
        bench.server.directory = FileHostDirectory(hosts)
        client = bench.add("10.0.1.5", magic=0xDEADBEEF)
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)

    def test_hostDirectoryCannotAnswer(self):
        """
        A directory that cannot answer (an LDAP server down, the host not
        cached) gets the client no reply, counted, with the reason in the
        one rate-limited warning per client, however often it announces
        itself.
        """
        from twisted.internet import defer

        from sysmon.directory import DirectoryUnavailable

        class Down:
            asked = 0

            def lookupAddress(self, address):
                self.asked += 1
                return defer.fail(DirectoryUnavailable(
                    f"unknown host (address {address}): LDAP server ldap://ldap:389 unreachable"))

        bench = self.bench()
        logs = LogCapture(self)
        bench.server.directory = directory = Down()
        client = bench.add("10.0.1.6", magic=0xDEADBEEF)
        bench.crashAll(client)
        bench.run(lambda: False if bench.reactor.seconds() < 5 else True)
        self.assertEqual(bench.transport.written, [])
        self.assertEqual(bench.crashDirs("10.0.1.6"), [])
        warnings = logs.matching("secure mode")
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("10.0.1.6", warnings[0])
        self.assertIn("the host directory cannot answer (unknown host (address 10.0.1.6)",
                      warnings[0])
        self.assertGreater(directory.asked, 2)
        self.assertEqual(bench.server.counters["directory_errors"], directory.asked)


class ConcurrencyTests(SynchronousTestCase):
    """
    At most C{concurrent} dumps at once.
    """

    def test_sixClientsFourDumps(self):
        """
        Six clients crash at once with a limit of four: four dumps complete,
        two clients are rebooted without a dump, each logged.
        """
        bench = Bench(os.path.abspath(self.mktemp()),
                      settings=ServerSettings(window=8, secure=False, concurrent=4, quiet=0.5))
        bench.start()
        logs = LogCapture(self)
        clients = [bench.add(f"10.0.2.{i}") for i in range(1, 7)]
        for client in clients:
            bench.crash(client)
        bench.crashAll(*clients)
        bench.run(lambda: all(c.sim.rebooted for c in clients))
        outcomes = sorted(dumpInfo(bench.crashDirs(c.ip)[0])["outcome"] for c in clients)
        self.assertEqual(outcomes, ["complete"] * 4 + ["too-many-dumps"] * 2)
        refused = [t for t in logs.texts() if "too many concurrent dumps" in t]
        self.assertEqual(len(refused), 2)
        for client in clients[4:]:
            self.assertIn(client.ip, "".join(refused))
            self.assertEqual(requests(bench, client.ip, COMM.SEND_MEM), [])


class ScriptTests(SynchronousTestCase):
    """
    The four scripts.
    """

    def bench(self, **kw):
        bench = Bench(os.path.abspath(self.mktemp()), **kw)
        bench.start()
        return bench

    def test_crashScriptArguments(self):
        """
        netdump-crash runs with the client's IP and directory, netdump-reboot
        likewise after the dump, when the vmcore is complete and closed.
        """
        bench = self.bench()
        bench.writeScript("netdump-crash")
        bench.writeScript("netdump-reboot")
        bench.scriptExits.update({"netdump-crash": 0})
        client = bench.add("10.0.3.1")
        seen = {}

        def rebootScript():
            if "files" in seen:
                return True
            for p in bench.reactor.processes:
                if p.args[1].endswith("netdump-reboot") and not p.ended:
                    directory = p.args[3]
                    seen["files"] = sorted(os.listdir(directory))
                    seen["open"] = [s for s in bench.server.sessions.values()]
                    seen["fds"] = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                                   if os.path.exists(f"/proc/self/fd/{fd}")]
                    p.exit(0)
                    return True
            return False

        bench.crashAll(client)
        bench.run(rebootScript)
        bench.run(lambda: client.sim.rebooted)
        [directory] = bench.crashDirs(client.ip)
        self.assertEqual(bench.scriptRuns[0], ["netdump-crash", client.ip, directory])
        self.assertEqual(bench.scriptRuns[-1], ["netdump-reboot", client.ip, directory])
        self.assertIn("vmcore", seen["files"])
        self.assertNotIn("vmcore-incomplete", seen["files"])
        self.assertEqual([f for f in seen["fds"] if f.startswith(directory)], [])

    def test_crashScriptRefuses(self):
        """
        netdump-crash exiting non-zero: no dump, the client is acknowledged
        and told to reboot.
        """
        bench = self.bench()
        bench.writeScript("netdump-crash")
        bench.scriptExits["netdump-crash"] = 1
        client = bench.add("10.0.3.2")
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        [directory] = bench.crashDirs(client.ip)
        self.assertEqual(dumpInfo(directory)["outcome"], "refused-by-script")
        self.assertEqual(requests(bench, client.ip, COMM.SEND_MEM), [])
        self.assertNotIn("vmcore", os.listdir(directory))

    def test_slowScriptDoesNotBlockOthers(self):
        """
        While one client's netdump-crash is still running, another client
        dumps completely.
        """
        bench = self.bench()
        bench.writeScript("netdump-crash")
        slow, fast = bench.add("10.0.3.3"), bench.add("10.0.3.4")
        bench.crash(slow)
        bench.crashAll(slow)
        bench.pump()
        [slowScript] = bench.reactor.processes
        bench.scriptExits["netdump-crash"] = 0
        bench.crashAll(fast)
        bench.run(lambda: fast.sim.rebooted)
        self.assertFalse(slowScript.ended)
        self.assertFalse(slow.sim.acked)
        slowScript.exit(0)
        bench.run(lambda: slow.sim.rebooted)
        self.assertEqual(dumpInfo(bench.crashDirs(slow.ip)[0])["outcome"], "complete")

    def test_nospaceZeroReboots(self):
        """
        Space short and netdump-nospace exits 0: reboot without a dump.
        """
        bench = self.bench(freeSpace=lambda path: 1000)
        bench.writeScript("netdump-nospace")
        bench.scriptExits["netdump-nospace"] = 0
        client = bench.add("10.0.3.5")
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        [directory] = bench.crashDirs(client.ip)
        self.assertEqual(bench.scriptRuns, [["netdump-nospace", client.ip, directory]])
        self.assertEqual(dumpInfo(directory)["outcome"], "no-space")
        self.assertEqual(requests(bench, client.ip, COMM.SEND_MEM), [])

    def test_nospaceNonZeroChecksAgain(self):
        """
        netdump-nospace exits non-zero: the space is checked once more; if
        the script made room the dump proceeds.
        """
        free = [1000]
        bench = self.bench(freeSpace=lambda path: free[0])
        bench.writeScript("netdump-nospace", "exit 3\n")
        client = bench.add("10.0.3.6")

        def cleanup():
            for p in bench.reactor.processes:
                if not p.ended:
                    free[0] = 10**12
                    p.exit(3)
                    return False
            return client.sim.rebooted

        bench.crashAll(client)
        bench.run(cleanup)
        self.assertEqual(dumpInfo(bench.crashDirs(client.ip)[0])["outcome"], "complete")

    def test_nospaceNonZeroStillShort(self):
        """
        netdump-nospace exits non-zero and space is still short: the dump is
        given up (SHOW_STATE is still asked for, then reboot).
        """
        bench = self.bench(freeSpace=lambda path: 1000)
        bench.writeScript("netdump-nospace")
        bench.scriptExits["netdump-nospace"] = 1
        client = bench.add("10.0.3.7")
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        [directory] = bench.crashDirs(client.ip)
        self.assertEqual(dumpInfo(directory)["outcome"], "no-space")
        self.assertEqual(len(bench.scriptRuns), 1)
        self.assertEqual(requests(bench, client.ip, COMM.SEND_MEM), [])
        self.assertEqual(len(requests(bench, client.ip, COMM.SHOW_STATE)), 1)

    def test_unsafeScriptRefused(self):
        """
        A group-writable script is not run; the refusal is logged with the
        reason and the dump goes on.
        """
        bench = self.bench()
        logs = LogCapture(self)
        bench.writeScript("netdump-crash", "exit 1\n", mode=0o775)
        client = bench.add("10.0.3.8")
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        self.assertEqual(bench.scriptRuns, [])
        self.assertEqual(dumpInfo(bench.crashDirs(client.ip)[0])["outcome"], "complete")
        self.assertTrue([t for t in logs.texts() if "refusing to run" in t
                         and "writable by group or others" in t])

    def test_startScriptOnLogRestart(self):
        """
        netdump-start runs when a client's log stream starts at offset 0
        (it booted), with the client's IP.
        """
        bench = self.bench()
        bench.writeScript("netdump-start")
        bench.scriptExits["netdump-start"] = 0
        client = bench.add("10.0.3.9")
        bench.bootLog(client, b"[...network console startup...]\n")
        bench.pump()
        self.assertEqual(bench.scriptRuns, [["netdump-start", "10.0.3.9"]])


class ConsoleTests(SynchronousTestCase):
    """
    Console text reaches console/<ip>.log and the crash directory's log.
    """

    def test_logIntoCrashDir(self):
        """
        The text since boot is copied into the crash log when the crash
        starts; text sent during the dump (SHOW_STATE) follows; text from an
        earlier boot is not copied.
        """
        bench = Bench(os.path.abspath(self.mktemp()))
        bench.start()
        client = bench.add("10.0.4.1")
        bench.bootLog(client, b"old boot\n")
        client.sim.logOffset = 0
        bench.bootLog(client, b"[...network console startup...]\nOops: 0002\n")
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        [directory] = bench.crashDirs(client.ip)
        with open(os.path.join(directory, "log"), "rb") as f:
            log = f.read()
        self.assertTrue(log.startswith(b"[...network console startup...]\nOops: 0002\n"), log)
        self.assertIn(b"SysRq : Show State", log)
        self.assertNotIn(b"old boot", log)
        with open(os.path.join(bench.root, "console", "10.0.4.1.log"), "rb") as f:
            whole = f.read()
        self.assertTrue(whole.startswith(b"old boot\n[...network console"))

    def test_outOfOrderLogInCrashLog(self):
        """
        REPLY_LOG chunks that arrive out of order are put in order; a chunk
        that never arrives leaves a marked gap after the hold time.
        """
        bench = Bench(os.path.abspath(self.mktemp()))
        bench.start()
        client = bench.add("10.0.4.2")
        chunks = client.sim.logChunks(b"".join(b"line %02d\n" % i for i in range(10)), size=8)
        order = [0, 2, 1, 3, 5, 6, 7, 8, 9]  # chunk 4 is lost
        for i in order:
            bench.deliver(chunks[i], (client.ip, client.logPort))
        bench.reactor.advance(3)
        with open(os.path.join(bench.root, "console", "10.0.4.2.log"), "rb") as f:
            text = f.read()
        self.assertEqual(
            text,
            b"line 00\nline 01\nline 02\nline 03\n\n[netdump: 8 bytes of console text lost]\n"
            b"line 05\nline 06\nline 07\nline 08\nline 09\n",
        )


class ResumeTests(SynchronousTestCase):
    """
    A server stopped in the middle of a dump resumes it when started again.
    """

    def test_resume(self):
        """
        Stop the server mid-dump, start a new one on the same directory: it
        asks for the missing pages and the vmcore verifies.
        """
        root = os.path.abspath(self.mktemp())
        first = Bench(root)
        first.start()
        client = first.add("10.0.5.1", memory=8 * 2**20)
        first.crashAll(client)
        first.run(lambda: client.sim.servedCount > 700, step=0.01)
        self.successResultOf(first.server.stop())
        [directory] = first.crashDirs(client.ip)
        self.assertIn(".netdump-session.json", os.listdir(directory))
        second = Bench(root)
        second.clients[client.ip] = client
        second.start()
        self.assertIn(client.ip, second.server.sessions)
        second.run(lambda: client.sim.rebooted)
        code, report = verified(client, directory)
        self.assertEqual(code, 0, report)
        self.assertEqual(dumpInfo(directory)["outcome"], "complete")
        self.assertNotIn(".netdump-session.json", os.listdir(directory))
        # It resumed: it did not ask again for everything.
        asked = {wire.Request.fromBytes(d).arg for d, a in second.sent
                 if wire.Request.fromBytes(d).command == COMM.SEND_MEM}
        self.assertLess(len(asked), client.sim.memory.nrPages - 600)


class WriteFailureTests(SynchronousTestCase):
    """
    A failed write fails one dump cleanly; others go on.
    """

    def test_enospcOneClient(self):
        """
        ENOSPC while writing one client's vmcore: that dump ends with
        outcome no-space and vmcore-incomplete; the other completes.
        """
        bench = Bench(os.path.abspath(self.mktemp()))
        bench.start()
        bad, good = bench.add("10.0.6.1", memory=4 * 2**20), bench.add("10.0.6.2", memory=4 * 2**20)
        original = Vmcore.writePages

        def writePages(self, pfn, pages):
            if "10.0.6.1" in self.directory and pfn > 300:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(self, pfn, pages)

        self.patch(Vmcore, "writePages", writePages)
        bench.crashAll(bad, good)
        bench.run(lambda: bad.sim.rebooted and good.sim.rebooted)
        badDir, goodDir = bench.crashDirs(bad.ip)[0], bench.crashDirs(good.ip)[0]
        self.assertEqual(dumpInfo(badDir)["outcome"], "no-space")
        self.assertEqual(dumpInfo(badDir)["reason"], os.strerror(errno.ENOSPC))
        self.assertIn("vmcore-incomplete", os.listdir(badDir))
        self.assertEqual(dumpInfo(goodDir)["outcome"], "complete")
        self.assertEqual(verified(good, goodDir)[0], 0)


class CounterTests(SynchronousTestCase):
    """
    The server's counters for metrics: dumps by outcome, memory received,
    console lines.
    """

    def test_completeDump(self):
        """
        A complete dump counts once as C{complete}; the pages received
        (written ones and zero pages alike) and their bytes are counted, as
        dump.json reports them.
        """
        bench = Bench(os.path.abspath(self.mktemp()))
        bench.start()
        client = bench.add("10.0.7.1")
        self.assertEqual((bench.server.finished, bench.server.pagesReceived,
                          bench.server.bytesReceived), ({}, 0, 0))
        bench.crashAll(client)
        bench.run(lambda: client.sim.rebooted)
        [directory] = bench.crashDirs(client.ip)
        info = dumpInfo(directory)
        self.assertGreater(info["zero_pages"], 0)
        self.assertEqual(dict(bench.server.finished), {"complete": 1})
        self.assertEqual(bench.server.pagesReceived, client.sim.memory.ramPages())
        self.assertEqual(bench.server.pagesReceived, info["ram_pages_received"])
        self.assertEqual(bench.server.bytesReceived, info["ram_pages_received"] * 4096)

    def test_incompleteDump(self):
        """
        A client that goes silent mid-dump counts as C{incomplete}; the
        pages it did send are counted, fewer than its memory.
        """
        bench = Bench(os.path.abspath(self.mktemp()))
        bench.start()
        client = bench.add("10.0.7.2", memory=8 * 2**20)
        bench.crashAll(client)
        bench.run(lambda: client.sim.servedCount > 100, step=0.01)
        client.alive = False
        bench.run(bench.idle)
        [directory] = bench.crashDirs(client.ip)
        received = dumpInfo(directory)["ram_pages_received"]
        self.assertEqual(dict(bench.server.finished), {"incomplete": 1})
        self.assertEqual(bench.server.pagesReceived, received)
        self.assertGreater(received, 0)
        self.assertLess(received, client.sim.memory.ramPages())
        self.assertEqual(bench.server.bytesReceived, received * 4096)

    def test_consoleLines(self):
        """
        Console lines are counted as they are written to the logs: plain
        netconsole lines, a partial line once it is ended, and the lines
        of netdump's own log stream.
        """
        bench = Bench(os.path.abspath(self.mktemp()))
        bench.start()
        bench.deliver(b"first line\nsecond line\n", ("10.0.7.3", 6665))
        self.assertEqual(bench.server.consoleLines, 2)
        bench.deliver(b"a partial", ("10.0.7.3", 6665))
        self.assertEqual(bench.server.consoleLines, 2)
        bench.deliver(b" line ends\n", ("10.0.7.3", 6665))
        self.assertEqual(bench.server.consoleLines, 3)
        client = bench.add("10.0.7.4")
        bench.bootLog(client, b"Oops: 0002\nCPU: 0\nEIP: 0060\n")
        self.assertEqual(bench.server.consoleLines, 6)
