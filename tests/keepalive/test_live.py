"""
End-to-end tests of keepalive: a real C{twistd -n keepalive} in a child
process, driven by the real C{spawndaemon} (C{python -m
sysmon.keepalive.cli}) through its real control socket, supervising real
processes (C{/bin/sleep} and small shell scripts).  What the tests wait
for is what an operator sees: C{spawndaemon -L -v machine} parsed field by
field, keepalive's log, C{/proc}.

Every process a test starts is killed at its end, even when it fails:
keepalive by its pid, then every process whose command line holds the
test's directory or one of its marker arguments (each test gives its
programs a unique number as an argument, e.g. C{sleep 770012345001}).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, TypeVar

from twisted.trial.unittest import TestCase

from sysmon import processes
from sysmon.keepalive.table import Table
from sysmon.testing import TwistdChild, commandLineSoon, processAlive, writeScript

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: How long a test waits for something it expects, at most.
DEADLINE = 20.0

#: The fields of C{spawndaemon -L -v machine}'s process records, in order.
PROCESS_FIELDS = (
    "type", "slot", "state", "pid", "child", "started", "restarts", "failures", "group",
    "critical", "lastExit", "logPath", "config", "path", "args",
)

#: The fields of its keepalive record.
KEEPALIVE_FIELDS = ("type", "running", "pid", "since", "table", "control", "processes")

_markers = itertools.count(1)

_T = TypeVar("_T")

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "-": "-"}


def unescape(field: str) -> str:
    """
    A field of the machine listing as it was before escaping: C{-} is
    empty, C{\\-} a lone dash, C{\\t \\n \\r \\\\} a tab, newline, carriage
    return and backslash.
    """
    if field == "-":
        return ""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 1 < len(field) and field[i + 1] in _ESCAPES:
            out.append(_ESCAPES[field[i + 1]])
            i += 2
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parseMachine(text: str) -> list[dict[str, str]]:
    """
    Parse C{spawndaemon -L -v machine} output into one dict per line, keyed
    by L{PROCESS_FIELDS} or L{KEEPALIVE_FIELDS}.
    """
    records = []
    for line in text.splitlines():
        fields = [unescape(f) for f in line.split("\t")]
        names = KEEPALIVE_FIELDS if fields[0] == "keepalive" else PROCESS_FIELDS
        if fields[0] not in ("keepalive", "process") or len(fields) < len(names):
            raise AssertionError(f"not a machine listing line: {line!r}")
        records.append(dict(zip(names, fields)))
    return records


def readLines(path: str) -> list[str]:
    """
    The lines of C{path}, none if it does not exist.
    """
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def readText(path: str) -> str:
    """
    The text of C{path}, empty if it does not exist.
    """
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class LiveTestCase(TestCase):
    """
    A directory with a short path under C{/tmp} for the table, the control
    socket, the log and script directories and the test's files; a
    keepalive started on it on demand; C{spawndaemon} run against it.

    @ivar dir: the directory.
    @ivar daemon: the keepalive started last.
    """

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(dir="/tmp", prefix="ka")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.table = os.path.join(self.dir, "t.data")
        self.control = os.path.join(self.dir, "c")
        self.logDir = os.path.join(self.dir, "log")
        self.scriptDir = os.path.join(self.dir, "scripts")
        os.mkdir(self.scriptDir, 0o755)
        self.env = dict(os.environ, PYTHONPATH=ROOT)
        self.markers: list[str] = []
        self.seen: set[int] = set()
        self.daemon: TwistdChild | None = None
        self.addCleanup(self.killLeftovers)

    # -- processes ----------------------------------------------------------

    def marker(self) -> str:
        """
        A number no other test uses, to put on a program's command line.
        """
        marker = f"77{os.getpid():07d}{next(_markers):03d}"
        self.markers.append(marker)
        return marker

    def killLeftovers(self) -> None:
        """
        SIGKILL every process whose command line holds this test's directory
        or one of its markers (the pids the listings showed included).
        """
        needles = [self.dir.encode() + b"/"] + [m.encode() for m in self.markers]
        me = os.getpid()
        for _ in range(2):
            pids = set(self.seen)
            pids.update(int(n) for n in os.listdir("/proc") if n.isdigit())
            for pid in pids:
                if pid == me:
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue
                if any(n in cmdline for n in needles):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def popen(self, argv: list[str]) -> subprocess.Popen:
        """
        Start a process that keepalive did not start (in a session of its
        own), killed and reaped at the end of the test.
        """
        process = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop() -> None:
            if process.poll() is None:
                process.kill()
            process.wait(10)

        self.addCleanup(stop)
        return process

    # -- files --------------------------------------------------------------

    def config(self, name: str, text: str) -> str:
        """
        Write a process (or group) config file in the test's directory.
        """
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def script(self, name: str, body: str, directory: str | None = None,
               mode: int = 0o755) -> str:
        """
        Write a shell script in the test's directory (or C{directory}).
        """
        return writeScript(os.path.join(directory or self.dir, name), body, mode)

    # -- keepalive and spawndaemon ------------------------------------------

    def keepalive(self, *args: str) -> TwistdChild:
        """
        Start C{twistd -n keepalive} on the test's table, socket and
        directories, and wait until it supervises.
        """
        child = TwistdChild(self, ROOT)
        child.spawn(
            "keepalive", "--table", self.table, "--control", self.control,
            "--log-dir", self.logDir, "--script-dir", self.scriptDir, *args, env=self.env,
        )
        # Runs before TwistdChild's own SIGTERM cleanup: kill it outright.
        self.addCleanup(child.kill, signal.SIGKILL)
        self.daemon = child
        child.waitLog("keepalive supervising", DEADLINE)
        return child

    def spawndaemon(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """
        Run C{spawndaemon ARGS} on the test's socket, table and script
        directory.
        """
        argv = [sys.executable, "-m", "sysmon.keepalive.cli", "--control", self.control,
                "--table", self.table, "--script-dir", self.scriptDir, *args]
        return subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, *args: str, timeout: float = 30) -> str:
        """
        Run C{spawndaemon ARGS}, which must succeed; its output.
        """
        try:
            result = self.spawndaemon(*args, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"spawndaemon {' '.join(args)}: no answer within {timeout:g}s\n"
                      f"{self.logTail()}")
        self.assertEqual(
            result.returncode, 0,
            f"spawndaemon {' '.join(args)}: {result.stdout}{result.stderr}\n{self.logTail()}",
        )
        return result.stdout

    def records(self) -> list[dict[str, str]]:
        """
        The process records of C{spawndaemon -L -v machine processes}.
        """
        records = parseMachine(self.ok("-L", "-v", "machine", "processes"))
        for record in records:
            self.assertEqual(record["type"], "process")
            if record["pid"]:
                self.seen.add(int(record["pid"]))
        return records

    def logTail(self) -> str:
        """
        The end of the last keepalive's log, for failure messages.
        """
        if self.daemon is None:
            return ""
        return "keepalive's log:\n" + self.daemon.log()[-4000:]

    def waitFor(self, what: str, probe: Callable[[], _T], timeout: float = DEADLINE) -> _T:
        """
        Call C{probe} until it gives something true, and give that back.

        @raise AssertionError: nothing true within C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                self.fail(f"{what}: not within {timeout:g}s (last: {value!r})\n{self.logTail()}")
            time.sleep(0.05)

    def waitRecord(self, what: str, test: Callable[[dict[str, str]], bool],
                   timeout: float = DEADLINE) -> dict[str, str]:
        """
        Wait for a process record for which C{test} is true.
        """
        return self.waitFor(
            what, lambda: next((r for r in self.records() if test(r)), None), timeout
        )

    def waitRunning(self, what: str, exclude: tuple[int, ...] = (),
                    test: Callable[[dict[str, str]], bool] = lambda r: True) -> dict[str, str]:
        """
        Wait for a record in state C{ok} with a pid not in C{exclude}.
        """
        return self.waitRecord(
            what,
            lambda r: r["state"] == "ok" and r["pid"] != ""
            and int(r["pid"]) not in exclude and test(r),
        )

    def assertCommand(self, pid: int, argv: list[str]) -> None:
        """
        Process C{pid} is alive and runs C{argv}.
        """
        self.assertTrue(processAlive(pid), f"process {pid} is not running")
        self.assertEqual(commandLineSoon(pid), tuple(argv))

    def sleepConfig(self, name: str, marker: str, extra: str = "") -> str:
        """
        A config file for C{/bin/sleep MARKER} that is restarted at once.
        """
        return self.config(name, f"command = /bin/sleep\nargs = {marker}\nrespawn-time = 0\n"
                                 f"term-wait = 0.5\n{extra}")


class RestartTests(LiveTestCase):
    """
    Registered processes are restarted when they die, by their policy.
    """

    def test_killedIsRestarted(self) -> None:
        """
        C{spawndaemon -r} starts the program (state ok, a live child); after
        a SIGKILL a new process replaces it: a new pid, restarts 1, the
        death in the record and in the log.
        """
        marker = self.marker()
        cfg = self.sleepConfig("sleep.cfg", marker)
        daemon = self.keepalive()
        self.assertIn("slot 1", self.ok("-r", cfg))
        first = self.waitRunning("the first sleep")
        pid = int(first["pid"])
        self.assertCommand(pid, ["/bin/sleep", marker])
        self.assertEqual((first["slot"], first["child"], first["restarts"]), ("1", "1", "0"))
        self.assertEqual((first["path"], first["args"], first["config"]),
                         ("/bin/sleep", marker, cfg))
        os.kill(pid, signal.SIGKILL)
        second = self.waitRunning("the restarted sleep", exclude=(pid,))
        newPid = int(second["pid"])
        self.assertCommand(newPid, ["/bin/sleep", marker])
        self.assertFalse(processAlive(pid))
        self.assertEqual((second["slot"], second["child"], second["restarts"]), ("1", "1", "1"))
        self.assertEqual(second["lastExit"], "was killed by SIGKILL")
        daemon.waitLog(f"(pid {pid}) was killed by SIGKILL; restarted at once as pid {newPid}",
                       DEADLINE)

    def test_errorLimitDown(self) -> None:
        """
        A program that exits at once 10 times within its probation period
        (the default error limit) goes C{down}: no pid, no more restarts
        (nothing changes over a second), "is down" in the log.  Registering
        it again with C{spawndaemon -r} brings it back, in the same slot,
        with its failures forgotten.
        """
        marker = self.marker()
        starts = os.path.join(self.dir, "starts")
        fixed = os.path.join(self.dir, "fixed")
        program = self.script(
            "flaky.sh",
            f'echo start >> {starts}\nif [ -e {fixed} ]; then exec /bin/sleep {marker}; fi\n'
            "exit 1\n",
        )
        cfg = self.config("flaky.cfg", f"command = {program}\nrespawn-time = 0\n")
        daemon = self.keepalive()
        self.ok("-r", cfg)
        down = self.waitRecord("the down state", lambda r: r["state"] == "down")
        self.assertEqual(down["pid"], "")
        self.assertEqual((down["restarts"], down["failures"]), ("9", "10"))
        self.assertEqual(down["lastExit"], "exited with status 1")
        self.assertEqual(len(readLines(starts)), 10)
        daemon.waitLog(f"slot {down['slot']} {program} is down: 10 failures within 300s",
                       DEADLINE)
        time.sleep(1.0)
        [still] = self.records()
        self.assertEqual((still["state"], still["pid"], still["restarts"]),
                         ("down", "", "9"))
        self.assertEqual(len(readLines(starts)), 10)

        open(fixed, "w").close()
        self.ok("-r", cfg)
        back = self.waitRunning("the program brought back")
        self.assertEqual(back["slot"], down["slot"])
        self.assertEqual(back["failures"], "0")
        self.assertCommand(int(back["pid"]), ["/bin/sleep", marker])
        self.assertEqual(len(readLines(starts)), 11)

    def test_respawnTime(self) -> None:
        """
        A program that dies at once with C{respawn-time = 2} is restarted
        2 s after each death: the times it stamps at each start are at
        least 2 s apart (less 0.1 s for the stamping itself), and not much
        more.
        """
        marker = self.marker()
        stamps = os.path.join(self.dir, "stamps")
        program = self.script("quick.sh", f"date +%s.%N >> {stamps}\nexit 1\n")
        cfg = self.config(
            "quick.cfg",
            f"command = {program}\nargs = {marker}\nrespawn-time = 2\nerror-limit = 50\n",
        )
        daemon = self.keepalive()
        self.ok("-r", cfg)
        times = self.waitFor(
            "three starts", lambda: [float(t) for t in readLines(stamps)][:3]
            if len(readLines(stamps)) >= 3 else None,
        )
        gaps = [b - a for a, b in zip(times, times[1:])]
        for gap in gaps:
            self.assertGreaterEqual(gap, 2 - 0.1, gaps)
            self.assertLess(gap, 2 + 3, gaps)
        self.assertIn("less than its respawn time of 2s", daemon.log())


class StopTests(LiveTestCase):
    """
    Unregistering with C{-k} stops a process: SIGTERM, SIGKILL after its
    term wait.
    """

    def test_termWait(self) -> None:
        """
        A script that ignores SIGTERM (it traps it, notes the time and goes
        on) with C{term-wait = 1}: C{spawndaemon -k -s SLOT} returns once it
        is dead, at least 1 s after the SIGTERM, and the log shows the
        SIGTERM, then the SIGKILL.  A well-behaved C{sleep} (term wait 5 s)
        unregistered with C{-k -d /bin/sleep} dies by the SIGTERM at once.
        """
        stubbornMarker, sleepMarker = self.marker(), self.marker()
        terms = os.path.join(self.dir, "terms")
        program = self.script(
            "stubborn.sh",
            f"trap 'date +%s.%N >> {terms}' TERM\nwhile :; do sleep 0.1; done\n",
        )
        stubbornCfg = self.config(
            "stubborn.cfg", f"command = {program}\nargs = {stubbornMarker}\nterm-wait = 1\n"
        )
        sleepCfg = self.config(
            "sleep.cfg", f"command = /bin/sleep\nargs = {sleepMarker}\nterm-wait = 5\n"
        )
        daemon = self.keepalive()
        self.ok("-r", stubbornCfg)
        self.ok("-r", sleepCfg)
        stubborn = self.waitRunning("the stubborn script", test=lambda r: r["path"] == program)
        sleeper = self.waitRunning("the sleep", test=lambda r: r["path"] == "/bin/sleep")
        pid, sleepPid = int(stubborn["pid"]), int(sleeper["pid"])
        self.assertCommand(pid, ["/bin/sh", program, stubbornMarker])

        began = time.monotonic()
        out = self.ok("-k", "-s", stubborn["slot"], timeout=15)
        took = time.monotonic() - began
        returned = time.time()
        self.assertEqual(out, f"unregistered and stopped slot {stubborn['slot']}\n")
        self.assertFalse(processAlive(pid))
        [termed] = [float(t) for t in readLines(terms)]
        self.assertGreaterEqual(returned - termed, 1 - 0.1)
        self.assertGreaterEqual(took, 1 - 0.1)
        self.assertLess(took, 1 + 5)
        log = daemon.log()
        term = log.find(f"stopping slot {stubborn['slot']} {program} (pid {pid}): SIGTERM, "
                        "SIGKILL after 1s")
        kill = log.find(f"{program} (pid {pid}) ignored SIGTERM for 1s: SIGKILL")
        self.assertNotEqual(term, -1, log)
        self.assertGreater(kill, term, log)
        self.assertEqual([r["path"] for r in self.records()], ["/bin/sleep"])

        began = time.monotonic()
        self.ok("-k", "-d", "/bin/sleep", timeout=15)
        took = time.monotonic() - began
        self.assertLess(took, 3.0)
        self.assertFalse(processAlive(sleepPid))
        self.assertNotIn(f"(pid {sleepPid}) ignored SIGTERM", daemon.log())
        self.assertEqual(self.records(), [])

    def test_unregisterByPid(self) -> None:
        """
        C{spawndaemon -p PID} (no C{-k}) forgets the process but leaves it
        running; when it dies later it is not restarted, and keepalive
        still reaps it (no zombie).
        """
        marker = self.marker()
        daemon = self.keepalive()
        self.ok("-r", self.sleepConfig("sleep.cfg", marker))
        pid = int(self.waitRunning("the sleep")["pid"])
        self.assertEqual(self.ok("-p", str(pid)), "unregistered slot 1\n")
        self.assertEqual(self.records(), [])
        self.assertTrue(processAlive(pid))
        daemon.waitLog(f"pid {pid} keeps running", DEADLINE)
        os.kill(pid, signal.SIGKILL)
        self.waitFor("the process reaped", lambda: not os.path.exists(f"/proc/{pid}"))
        time.sleep(0.5)
        self.assertEqual(self.records(), [])
        self.assertEqual(processes.find("/bin/sleep", [marker]), [])

    def test_group(self) -> None:
        """
        A group file registers its members (C{-r}); the death of its
        critical member restarts the other member too (a new pid for
        both); C{spawndaemon -k -g GROUP} stops and forgets them all.
        """
        critical, member = self.marker(), self.marker()
        self.sleepConfig("a.cfg", critical)
        self.sleepConfig("b.cfg", member)
        group = self.config("web.cfg", "group = web\ncritical = a.cfg\nmember = b.cfg\n")
        daemon = self.keepalive()
        self.assertEqual(self.ok("-r", group), f"registered group web ({group}): slots 1, 2\n")
        self.waitFor("both members running",
                     lambda: all(r["state"] == "ok" for r in self.records()))
        first = {r["args"]: r for r in self.records()}
        self.assertEqual({a: (r["group"], r["critical"]) for a, r in first.items()},
                         {critical: ("web", "1"), member: ("web", "0")})
        oldCritical, oldMember = int(first[critical]["pid"]), int(first[member]["pid"])
        os.kill(oldCritical, signal.SIGKILL)

        def restarted() -> dict[str, dict[str, str]] | None:
            now = {r["args"]: r for r in self.records()}
            if all(r["state"] == "ok" and r["pid"] for r in now.values()) and {
                int(now[critical]["pid"]), int(now[member]["pid"])
            }.isdisjoint({oldCritical, oldMember}):
                return now
            return None

        now = self.waitFor("both members restarted", restarted)
        self.assertFalse(processAlive(oldMember))
        for marker in (critical, member):
            self.assertCommand(int(now[marker]["pid"]), ["/bin/sleep", marker])
        daemon.waitLog("it is critical to group web: restarting the group", DEADLINE)
        self.assertEqual(self.ok("-k", "-g", "web"), "unregistered and stopped slots 1, 2\n")
        self.assertEqual(self.records(), [])
        for marker in (critical, member):
            self.assertFalse(processAlive(int(now[marker]["pid"])))


class AdoptTests(LiveTestCase):
    """
    C{spawndaemon -R CFG PID}: processes keepalive did not start.
    """

    def _adopt(self, *daemonArgs: str) -> TwistdChild:
        marker = self.marker()
        cfg = self.sleepConfig("sleep.cfg", marker)
        daemon = self.keepalive(*daemonArgs)
        process = self.popen(["/bin/sleep", marker])
        self.assertEqual(self.ok("-R", cfg, str(process.pid)),
                         f"adopted pid {process.pid} in slot 1: {cfg}\n")
        adopted = self.waitRunning("the adopted sleep")
        self.assertEqual((adopted["pid"], adopted["child"]), (str(process.pid), "0"))
        process.kill()
        process.wait()
        new = self.waitRunning("its replacement", exclude=(process.pid,))
        self.assertEqual((new["child"], new["restarts"]), ("1", "1"))
        newPid = int(new["pid"])
        self.assertCommand(newPid, ["/bin/sleep", marker])
        daemon.waitLog(f"(pid {process.pid}) ended (not keepalive's child: status unknown)",
                       DEADLINE)
        # The replacement is keepalive's child, watched as one.
        os.kill(newPid, signal.SIGKILL)
        third = self.waitRunning("the next replacement", exclude=(process.pid, newPid))
        self.assertEqual((third["child"], third["restarts"]), ("1", "2"))
        daemon.waitLog(f"(pid {newPid}) was killed by SIGKILL", DEADLINE)
        return daemon

    def test_adoptPidfd(self) -> None:
        """
        With pidfds (the default), the death of an adopted process is an
        event: it is noticed and the program restarted as a child, although
        the polling interval is a minute.
        """
        daemon = self._adopt("-t", "60")
        self.assertIn("pidfds", daemon.log())

    def test_adoptPolling(self) -> None:
        """
        With C{--no-pidfd -t 0.5}, an adopted process is polled: its death
        is noticed and the program restarted; children are reaped through
        SIGCHLD.
        """
        daemon = self._adopt("--no-pidfd", "-t", "0.5")
        self.assertIn("polling every 0.5s", daemon.log())

    def test_adoptWrongProgram(self) -> None:
        """
        C{-R} refuses a pid that runs another program, and one that does
        not exist, with exit status 1 and the reason.
        """
        marker = self.marker()
        cfg = self.sleepConfig("sleep.cfg", marker)
        self.keepalive()
        other = self.popen(["/bin/sh", "-c", f"sleep {marker}; :"])
        result = self.spawndaemon("-R", cfg, str(other.pid))
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"process {other.pid} runs /bin/sh -c", result.stderr)
        other.kill()
        other.wait()
        result = self.spawndaemon("-R", cfg, str(other.pid))
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"no process {other.pid} is running", result.stderr)
        self.assertEqual(self.records(), [])

    def _pidReuse(self, *daemonArgs: str) -> None:
        """
        A table record whose pid now belongs to another process, running
        the same program with the same arguments but started later (a
        reused pid, made by rewriting the table while keepalive is
        stopped): the next keepalive does not take that process for its
        own.  It restarts the program as a new child and leaves the
        other process alone and running.
        """
        marker = self.marker()
        cfg = self.sleepConfig("sleep.cfg", marker)
        daemon = self.keepalive(*daemonArgs)
        adopted = self.popen(["/bin/sleep", marker])
        self.ok("-R", cfg, str(adopted.pid))
        self.waitRunning("the adopted sleep", test=lambda r: r["pid"] == str(adopted.pid))
        daemon.kill(signal.SIGTERM)
        adopted.kill()
        adopted.wait()
        stranger = self.popen(["/bin/sleep", marker])
        table = Table(self.table)
        try:
            [record] = table.load()
            self.assertEqual(record.pid, adopted.pid)
            self.assertNotEqual(record.startTime, processes.startTime(stranger.pid))
            record.pid = stranger.pid
            table.save(record)
        finally:
            table.close()

        daemon = self.keepalive(*daemonArgs)
        new = self.waitRunning("the restarted program", exclude=(adopted.pid, stranger.pid))
        self.assertEqual(new["child"], "1")
        self.assertCommand(int(new["pid"]), ["/bin/sleep", marker])
        daemon.waitLog(f"(pid {stranger.pid}) ended while keepalive was not running", DEADLINE)
        self.assertNotIn(f"pid {stranger.pid} still running", daemon.log())
        time.sleep(0.3)
        self.assertIsNone(stranger.poll())
        self.assertTrue(processAlive(stranger.pid))
        self.assertEqual([r["pid"] for r in self.records()], [new["pid"]])

    def test_pidReuse(self) -> None:
        """
        With pidfds, a reused pid in the table is not taken for the process
        that had it (see L{_pidReuse}).
        """
        self._pidReuse()

    def test_pidReusePolling(self) -> None:
        """
        Polling (C{--no-pidfd -t 0.5}), a reused pid in the table is not
        taken for the process that had it either (see L{_pidReuse}).
        """
        self._pidReuse("--no-pidfd", "-t", "0.5")


class LifecycleTests(LiveTestCase):
    """
    keepalive's own stop, restart, clean start and quit.
    """

    def test_sigtermAndTakeOver(self) -> None:
        """
        SIGTERM stops keepalive (its socket goes) and leaves its process
        running with its log file; a new keepalive on the same table takes
        it over (same pid, state ok, not its child) and restarts it when
        it dies.
        """
        marker = self.marker()
        daemon = self.keepalive()
        self.ok("-r", self.sleepConfig("sleep.cfg", marker))
        first = self.waitRunning("the sleep")
        pid = int(first["pid"])
        daemon.kill(signal.SIGTERM)
        self.assertFalse(os.path.exists(self.control))
        self.assertTrue(processAlive(pid))
        self.assertTrue(os.path.exists(first["logPath"]))

        daemon = self.keepalive()
        taken = self.waitRecord("the sleep taken over",
                                lambda r: r["pid"] == str(pid) and r["child"] == "0")
        self.assertEqual(taken["state"], "ok")
        self.assertCommand(pid, ["/bin/sleep", marker])
        daemon.waitLog(f"pid {pid} still running; watching it again", DEADLINE)
        os.kill(pid, signal.SIGKILL)
        new = self.waitRunning("its replacement", exclude=(pid,))
        self.assertEqual((new["child"], new["restarts"]), ("1", "1"))
        self.assertCommand(int(new["pid"]), ["/bin/sleep", marker])

    def test_quitAfterTakeOver(self) -> None:
        """
        A process started by an earlier keepalive and taken over by this
        one (not its child) is still one keepalive started: C{spawndaemon
        -Q} stops it.
        """
        marker = self.marker()
        daemon = self.keepalive()
        self.ok("-r", self.sleepConfig("sleep.cfg", marker))
        pid = int(self.waitRunning("the sleep")["pid"])
        daemon.kill(signal.SIGTERM)
        daemon = self.keepalive()
        self.waitRecord("the sleep taken over",
                        lambda r: r["pid"] == str(pid) and r["child"] == "0")
        self.assertEqual(self.ok("-Q"),
                         "keepalive is stopping; it stopped the processes in slot 1\n")
        assert daemon.process is not None
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
        self.assertFalse(processAlive(pid))

    def test_cleanStart(self) -> None:
        """
        C{keepalive -i} starts with an empty table and deletes the old log
        files (files that are not keepalive's logs stay).
        """
        marker = self.marker()
        cfg = self.sleepConfig("sleep.cfg", marker)
        daemon = self.keepalive()
        self.ok("-r", self.sleepConfig("other.cfg", self.marker()))
        self.ok("-r", cfg)
        self.waitFor("both running", lambda: [r["state"] for r in self.records()] == ["ok"] * 2)
        logs = [r["logPath"] for r in self.records()]
        daemon.kill(signal.SIGTERM)
        stale = os.path.join(self.logDir, "gone.12345")
        notes = os.path.join(self.logDir, "notes")
        for path in (stale, notes):
            with open(path, "w") as f:
                f.write("x\n")

        daemon = self.keepalive("-i")
        self.waitFor("an empty table", lambda: self.records() == [])
        for path in logs + [stale]:
            self.assertFalse(os.path.exists(path), path)
        self.assertTrue(os.path.exists(notes))
        self.assertIn("clean table", daemon.log())

    def test_cleanStartSlots(self) -> None:
        """
        After C{keepalive -i} the slots start at 1 again (the table is
        cleared, and a cleared table gives out slots from 1).
        """
        daemon = self.keepalive()
        self.ok("-r", self.sleepConfig("one.cfg", self.marker()))
        cfg = self.sleepConfig("two.cfg", self.marker())
        self.assertIn("slot 2", self.ok("-r", cfg))
        daemon.kill(signal.SIGTERM)
        self.keepalive("-i")
        self.assertEqual(self.ok("-r", cfg), f"registered {cfg}: slot 1\n")
        [record] = self.records()
        self.assertEqual(record["slot"], "1")

    def test_quit(self) -> None:
        """
        C{spawndaemon -Q} stops keepalive (its process exits, its socket
        goes) and the process it started, leaves a process registered with
        C{-R} running, and clears the table.
        """
        own, adoptedMarker = self.marker(), self.marker()
        daemon = self.keepalive()
        self.ok("-r", self.sleepConfig("own.cfg", own))
        adopted = self.popen(["/bin/sleep", adoptedMarker])
        self.ok("-R", self.sleepConfig("adopted.cfg", adoptedMarker), str(adopted.pid))
        self.waitFor("both running", lambda: [r["state"] for r in self.records()] == ["ok"] * 2)
        ownPid = int(next(r for r in self.records() if r["args"] == own)["pid"])
        self.assertEqual(self.ok("-Q"),
                         "keepalive is stopping; it stopped the processes in slot 1\n")
        assert daemon.process is not None
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
        self.assertFalse(os.path.exists(self.control))
        self.assertFalse(processAlive(ownPid))
        self.assertIsNone(adopted.poll())
        self.assertEqual(self.records(), [])
        self.assertEqual(self.spawndaemon("-q").returncode, 1)


class LogFileTests(LiveTestCase):
    """
    Each process's output in C{<log-dir>/<basename>.<pid>}.
    """

    def test_logFiles(self) -> None:
        """
        The program's stdout and stderr go to C{<basename>.<pid>}; after a
        restart the old file is gone and the new one has the new output;
        C{spawndaemon -k -d PATH} deletes it.
        """
        marker = self.marker()
        program = self.script(
            "talker.sh",
            f"echo out-$$\necho err-$$ >&2\nexec /bin/sleep {marker}\n",
        )
        daemon = self.keepalive()
        self.ok("-r", self.config("talker.cfg", f"command = {program}\nrespawn-time = 0\n"))
        first = self.waitRunning("the talker")
        pid = int(first["pid"])
        log = os.path.join(self.logDir, f"talker.sh.{pid}")
        self.assertEqual(first["logPath"], log)
        self.waitFor("its output", lambda: readText(log) == f"out-{pid}\nerr-{pid}\n")
        self.assertEqual(os.listdir(self.logDir), [os.path.basename(log)])

        os.kill(pid, signal.SIGKILL)
        second = self.waitRunning("the restarted talker", exclude=(pid,))
        newPid = int(second["pid"])
        newLog = os.path.join(self.logDir, f"talker.sh.{newPid}")
        self.assertEqual(second["logPath"], newLog)
        self.assertFalse(os.path.exists(log))
        self.waitFor("the new output", lambda: readText(newLog) == f"out-{newPid}\nerr-{newPid}\n")
        self.assertEqual(os.listdir(self.logDir), [os.path.basename(newLog)])

        self.ok("-k", "-d", program, timeout=15)
        self.assertFalse(os.path.exists(newLog))
        self.assertEqual(os.listdir(self.logDir), [])
        daemon.waitLog(f"unregistered slot 1 {program}", DEADLINE)


class RestartScriptTests(LiveTestCase):
    """
    A registered restart script restarts the program; unsafe ones are
    refused; C{-c down=} and C{-c reject=}.
    """

    def restartConfig(self, scriptName: str, body: str, marker: str, extra: str = "",
                      mode: int = 0o755) -> str:
        """
        A restart script C{scriptName} in the script directory and a config
        for C{/bin/sleep MARKER} that names it (by its bare name).
        """
        self.script(scriptName, body, self.scriptDir, mode)
        return self.sleepConfig("sleep.cfg", marker, f"restart-script = {scriptName}\n{extra}")

    def test_restartScript(self) -> None:
        """
        After a kill, the restart script runs (with the slot and how the
        process ended in its environment) and starts the program in the
        background; keepalive follows the process it left: state ok, a new
        live pid that is not its child.  The program here is a copy of
        sleep under a name of the test's own, so that no other sleep on
        the machine can be taken for it.
        """
        marker = self.marker()
        snooze = os.path.join(self.dir, "snooze")
        shutil.copy("/bin/sleep", snooze)
        ran = os.path.join(self.dir, "ran")
        self.script("restart-snooze", (
            f'echo "$KEEPALIVE_SLOT $KEEPALIVE_LAST_EXIT" >> {ran}\n'
            f"setsid -f {snooze} {marker} </dev/null >/dev/null 2>&1\n"
            "exit 0\n"
        ), self.scriptDir)
        cfg = self.config("snooze.cfg", f"command = {snooze}\nargs = {marker}\n"
                                        "respawn-time = 0\nrestart-script = restart-snooze\n")
        daemon = self.keepalive()
        self.ok("-r", cfg)
        pid = int(self.waitRunning("the first snooze")["pid"])
        self.assertEqual(readLines(ran), [])
        os.kill(pid, signal.SIGKILL)
        new = self.waitRunning("the snooze the script started", exclude=(pid,))
        newPid = int(new["pid"])
        self.assertEqual((new["child"], new["restarts"]), ("0", "1"))
        self.assertCommand(newPid, [snooze, marker])
        self.assertEqual(readLines(ran), ["1 was killed by SIGKILL"])
        daemon.waitLog(f"following pid {newPid}, started by its restart script", DEADLINE)
        # keepalive watches the process the script left.
        os.kill(newPid, signal.SIGKILL)
        third = self.waitRunning("the next snooze", exclude=(pid, newPid))
        self.assertEqual(third["restarts"], "2")
        self.assertEqual(len(readLines(ran)), 2)

    def test_restartScriptLog(self) -> None:
        """
        A restart through the restart script deletes the log file of the
        instance that died, like any restart, and the record no longer
        names it: the process the script started does not write there.
        """
        marker = self.marker()
        snooze = os.path.join(self.dir, "snooze")
        shutil.copy("/bin/sleep", snooze)
        self.script("restart-snooze", (
            f"setsid -f {snooze} {marker} </dev/null >/dev/null 2>&1\nexit 0\n"
        ), self.scriptDir)
        cfg = self.config("snooze.cfg", f"command = {snooze}\nargs = {marker}\n"
                                        "respawn-time = 0\nrestart-script = restart-snooze\n")
        self.keepalive()
        self.ok("-r", cfg)
        first = self.waitRunning("the first snooze")
        pid = int(first["pid"])
        self.assertEqual(first["logPath"], os.path.join(self.logDir, f"snooze.{pid}"))
        os.kill(pid, signal.SIGKILL)
        new = self.waitRunning("the snooze the script started", exclude=(pid,))
        self.assertFalse(os.path.exists(first["logPath"]),
                         f"the dead instance's log {first['logPath']} is still there")
        self.assertEqual(new["logPath"], "", "the record still names the dead instance's log")

    def test_unsafeRestartScript(self) -> None:
        """
        C{spawndaemon -r} of a config whose restart script is writable by
        its group, or owned by another user, exits 1 with the reason, and
        nothing is registered.
        """
        self.keepalive()
        cfg = self.restartConfig("restart-group", "exit 0\n", self.marker(), mode=0o775)
        result = self.spawndaemon("-r", cfg)
        self.assertEqual(result.returncode, 1)
        self.assertIn("spawndaemon: ", result.stderr)
        self.assertIn("writable by group or others (mode 0775)", result.stderr)

        cfg = self.restartConfig("restart-nobody", "exit 0\n", self.marker())
        os.chown(os.path.join(self.scriptDir, "restart-nobody"), 65534, 65534)
        result = self.spawndaemon("-r", cfg)
        self.assertEqual(result.returncode, 1)
        self.assertIn("it is owned by nobody", result.stderr)
        self.assertEqual(self.records(), [])

    def test_downCode(self) -> None:
        """
        C{-c down=7}: a restart script exiting with 7 puts the process down
        at once.
        """
        marker = self.marker()
        ran = os.path.join(self.dir, "ran")
        cfg = self.restartConfig("restart-down", f"echo ran >> {ran}\nexit 7\n", marker)
        daemon = self.keepalive()
        self.ok("-c", "down=7", "-r", cfg)
        pid = int(self.waitRunning("the sleep")["pid"])
        os.kill(pid, signal.SIGKILL)
        down = self.waitRecord("the down state", lambda r: r["state"] == "down")
        self.assertEqual((down["pid"], down["restarts"]), ("", "1"))
        self.assertEqual(readLines(ran), ["ran"])
        daemon.waitLog("restart-down exited with 7 (-c down=7)", DEADLINE)
        self.assertEqual(processes.find("/bin/sleep", [marker]), [])

    def test_rejectCode(self) -> None:
        """
        C{-c reject=5}: each time the restart script exits with 5 counts as
        a failure; the failures grow until the error limit (4) puts the
        process down.
        """
        marker = self.marker()
        ran = os.path.join(self.dir, "ran")
        cfg = self.restartConfig("restart-reject", f"echo ran >> {ran}\nexit 5\n", marker,
                                 "error-limit = 4\n")
        daemon = self.keepalive()
        self.ok("-c", "reject=5", "-r", cfg)
        pid = int(self.waitRunning("the sleep")["pid"])
        os.kill(pid, signal.SIGKILL)
        seen = []

        def down() -> dict[str, str] | None:
            [record] = self.records()
            seen.append((record["state"], int(record["failures"])))
            return record if record["state"] == "down" else None

        final = self.waitFor("the down state", down)
        self.assertEqual(final["failures"], "4")
        self.assertEqual(final["pid"], "")
        self.assertIn("restart refused by", final["lastExit"])
        # The death and three refusals.
        self.assertEqual(readLines(ran), ["ran"] * 3)
        counts = [n for _, n in seen]
        self.assertEqual(counts, sorted(counts), seen)
        self.assertTrue({n for state, n in seen if state != "down"} & {1, 2, 3}, seen)
        daemon.waitLog("(exit 5, -c reject=5); counted as a failure", DEADLINE)
        self.assertIn("is down: its error limit was reached", daemon.log())


class CommandLineTests(LiveTestCase):
    """
    C{-L} and C{-q} with keepalive running and stopped; the errors of
    C{-r} with a missing keepalive and a bad config file.
    """

    def test_listAndQuery(self) -> None:
        """
        While keepalive runs, C{-q} exits 0 silently and C{-L} (machine and
        human) shows keepalive running and the record; once it has
        stopped, C{-q} exits 1 and C{-L} still shows the table from the
        file and says keepalive is not running; C{-r} then exits 1 with
        "not running".
        """
        marker = self.marker()
        cfg = self.sleepConfig("sleep.cfg", marker)
        daemon = self.keepalive()
        assert daemon.process is not None
        self.ok("-r", cfg)
        pid = self.waitRunning("the sleep")["pid"]
        query = self.spawndaemon("-q")
        self.assertEqual((query.returncode, query.stdout, query.stderr), (0, "", ""))
        [ka, proc] = parseMachine(self.ok("-L", "-v", "machine"))
        self.assertEqual(
            ka, dict(type="keepalive", running="yes", pid=str(daemon.process.pid),
                     since=ka["since"], table=self.table, control=self.control, processes="1"),
        )
        self.assertLess(abs(float(ka["since"]) - time.time()), 60)
        self.assertEqual(
            {k: proc[k] for k in ("slot", "state", "pid", "child", "path", "args", "config")},
            dict(slot="1", state="ok", pid=pid, child="1", path="/bin/sleep", args=marker,
                 config=cfg),
        )
        self.assertEqual(proc["logPath"], os.path.join(self.logDir, f"sleep.{pid}"))
        [ka] = parseMachine(self.ok("-L", "-v", "machine", "keepalive"))
        self.assertEqual(ka["running"], "yes")
        human = self.ok("-L")
        self.assertIn(f"keepalive: running, pid {daemon.process.pid}", human)
        self.assertIn("SLOT  STATE", human)
        self.assertIn(f"/bin/sleep {marker}", human)

        daemon.kill(signal.SIGTERM)
        query = self.spawndaemon("-q")
        self.assertEqual((query.returncode, query.stdout), (1, ""))
        [ka, proc] = parseMachine(self.ok("-L", "-v", "machine"))
        self.assertEqual((ka["running"], ka["pid"], ka["processes"]), ("no", "", "1"))
        self.assertEqual((proc["state"], proc["pid"]), ("ok", pid))
        human = self.ok("-L")
        self.assertIn("not running", human)
        self.assertIn(f"/bin/sleep {marker}", human)
        result = self.spawndaemon("-r", cfg)
        self.assertEqual(result.returncode, 1)
        self.assertIn("spawndaemon: keepalive is not running", result.stderr)

    def test_badConfig(self) -> None:
        """
        A bad config file gives exit status 1 and its file:line, with
        keepalive running (nothing is registered) and without it.
        """
        bad = self.config("bad.cfg", "command = /bin/sleep\nrespawn-time = soon\n")
        typo = self.config("typo.cfg", "# a typo\ncomand = /bin/sleep\n")
        self.keepalive()
        for path, line in ((bad, 2), (typo, 2)):
            result = self.spawndaemon("-r", path)
            self.assertEqual(result.returncode, 1)
            self.assertIn(f"spawndaemon: {path}:{line}:", result.stderr)
        self.assertEqual(self.records(), [])
        assert self.daemon is not None
        self.daemon.kill(signal.SIGTERM)
        result = self.spawndaemon("-r", bad)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"spawndaemon: {bad}:2:", result.stderr)
