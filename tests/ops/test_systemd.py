"""
Tests for the systemd units in C{conf/systemd/}: each is read as systemd
reads it; each C{ExecStart} is parsed by twistd's own C{ServerOptions}
(and so by the daemon's C{Options}); users, capabilities, sandboxing and
writable paths are checked against what the daemon does; C{systemd-analyze
verify} judges them where it is installed; and each per-daemon unit's
command is run as a real child with C{$NOTIFY_SOCKET} and a journal socket
of the test's own, to show that C{Type=notify} is set exactly where the
daemon sends C{READY=1} and that the watchdog sends C{WATCHDOG=1} often
enough for C{WatchdogSec=}.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.application.service import ServiceMaker
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from sysmon.ops import logs
from sysmon.testing import freePort, stopProcess
from sysmon.watchdog.config import WatchdogConfig
from tests.ops.test_logs import FakeJournal, asDict, waitHandler

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(CHECKOUT, "conf", "systemd")

#: Where the units expect twistd (a venv in /opt/sysmon: README.rst).
TWISTD = "/opt/sysmon/bin/twistd"

#: unit -> the twistd plugin it runs (None: the tac).
EXPECTED = {
    "sysmon.service": None,
    "sysmon-netdump.service": "netdump",
    "sysmon-statd.service": "statd",
    "sysmon-statd-notify.service": "statd",
    "sysmon-recvstats.service": "recvstats",
    "sysmon-sendstats.service": "sendstats",
    "sysmon-watchdog.service": "watchdog",
    "sysmon-keepalive.service": "keepalive",
}

#: The units whose process sends sd_notify messages (READY=1 ...): the
#: watchdog daemon (sysmon.watchdog.service) and the tac (sysmon.ops.app).
NOTIFYING = {"sysmon.service", "sysmon-watchdog.service"}

#: Confined units: an unprivileged user, or root without capabilities.
CONFINED = {"sysmon-netdump.service", "sysmon-statd.service", "sysmon-statd-notify.service",
            "sysmon-recvstats.service", "sysmon-sendstats.service"}


class Unit:
    """
    A unit file read as systemd reads it: C{[Section]} headers, C{Key=Value}
    lines (blanks around C{=} dropped), C{#} and C{;} comments, a trailing
    backslash joining the next line, repeated keys kept in order.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.sections: dict[str, list[tuple[str, str]]] = {}
        section = None
        pending = ""
        with open(path) as f:
            for number, raw in enumerate(f, 1):
                line = raw.rstrip("\n")
                if not pending and line.lstrip().startswith(("#", ";")):
                    continue
                if line.endswith("\\"):
                    pending += line[:-1] + " "
                    continue
                line, pending = (pending + line).strip(), ""
                if not line:
                    continue
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1]
                    self.sections.setdefault(section, [])
                    continue
                if section is None or "=" not in line:
                    raise ValueError(f"{path}:{number}: not a Key=Value line in a section")
                key, value = line.split("=", 1)
                self.sections[section].append((key.strip(), value.strip()))

    def all(self, section: str, key: str) -> list[str]:
        """
        Every value of C{key}, after the last empty assignment (which
        resets a list in systemd).
        """
        values: list[str] = []
        for k, v in self.sections.get(section, []):
            if k == key:
                values = [] if v == "" else values + [v]
        return values

    def get(self, section: str, key: str) -> str | None:
        """
        The value of C{key} (the last one), or L{None}.
        """
        found = [v for k, v in self.sections.get(section, []) if k == key]
        return found[-1] if found else None

    def words(self, section: str, key: str) -> list[str]:
        """
        The space-separated words of every C{key} line (After=, Wants=...).
        """
        return [w for v in self.all(section, key) for w in v.split()]

    def service(self, key: str) -> str | None:
        return self.get("Service", key)

    def execStart(self) -> list[str]:
        """
        The one ExecStart command, split as systemd splits it (shell-like
        quoting), with the executable's prefix characters (C{-@:+!}) gone.
        """
        commands = self.all("Service", "ExecStart")
        assert len(commands) == 1, f"{self.name}: {len(commands)} ExecStart lines"
        argv = shlex.split(commands[0])
        argv[0] = argv[0].lstrip("-@:+!")
        return argv

    def environment(self) -> dict[str, str]:
        """
        The Environment= assignments.
        """
        env = {}
        for value in self.all("Service", "Environment"):
            for word in shlex.split(value):
                name, _, v = word.partition("=")
                env[name] = v
        return env


def units() -> dict[str, Unit]:
    return {name: Unit(os.path.join(UNITS, name))
            for name in sorted(os.listdir(UNITS)) if name.endswith(".service")}


def seconds(text: str) -> float:
    """
    A systemd time span (C{90s}, C{1min 30s}, C{2min}, a bare number of
    seconds) in seconds.
    """
    factors = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * factors[unit]
    return total


def plugins() -> dict[str, ServiceMaker]:
    """
    The ServiceMakers of twisted/plugins/sysmon_plugins.py, by tapname.
    """
    from twisted.plugins import sysmon_plugins

    return {m.tapname: m for m in vars(sysmon_plugins).values() if isinstance(m, ServiceMaker)}


def under(path: str, directories: list[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


class UnitFileTests(SynchronousTestCase):
    """
    The unit files, read and parsed: what each runs and with which rights.
    """

    def setUp(self):
        self.units = units()
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)

    def parse(self, unit: Unit) -> ServerOptions:
        """
        The unit's command line through twistd's ServerOptions (which hands
        the daemon's part to the plugin's Options), without $OPTIONS (the
        environment file is optional) and with configuration files the
        test makes (netdump's /etc/netdump.conf, watchdog.conf).
        """
        argv = [w for w in unit.execStart()[1:] if w != "$OPTIONS"]
        tapname = EXPECTED[unit.name]
        if tapname == "netdump":
            config = os.path.join(self.tmp, "netdump.conf")
            open(config, "w").close()
            argv += ["--config", config]
        elif tapname == "watchdog":
            config = os.path.join(self.tmp, "watchdog.conf")
            with open(config, "w") as f:
                f.write(f"interval = 1\nlog-dir = {self.tmp}/watchdog\n")
            argv += ["--config-file", config]
        options = ServerOptions()
        options.parseOptions(argv)
        return options

    def test_theUnits(self):
        """
        conf/systemd has the tac's unit and one unit per daemon (statd's
        notify mode apart), and nothing else.
        """
        self.assertEqual(sorted(self.units), sorted(EXPECTED))
        self.assertEqual(set(os.listdir(UNITS)), set(EXPECTED))

    def test_sections(self):
        """
        Every unit has a description, a [Service] with one ExecStart, and
        is wanted by multi-user.target.
        """
        for unit in self.units.values():
            self.assertTrue(unit.get("Unit", "Description"), unit.name)
            self.assertEqual(set(unit.sections), {"Unit", "Service", "Install"}, unit.name)
            self.assertEqual(unit.words("Install", "WantedBy"), ["multi-user.target"],
                             unit.name)

    def test_execStart(self):
        """
        Each ExecStart runs twistd in the foreground without a pid file, and
        twistd's own ServerOptions accepts the whole command line: a
        plugin of twisted/plugins/sysmon_plugins.py with options its
        Options accepts, or the tac.
        """
        makers = plugins()
        for unit in self.units.values():
            argv = unit.execStart()
            self.assertEqual(argv[0], TWISTD, unit.name)
            options = self.parse(unit)
            self.assertTrue(options["nodaemon"], unit.name)
            self.assertEqual(options["pidfile"], "", unit.name)
            tapname = EXPECTED[unit.name]
            if tapname is None:
                self.assertIsNone(options.subCommand, unit.name)
                self.assertEqual(options["python"], "/etc/sysmon/sysmon.tac")
                continue
            self.assertIn(tapname, makers, unit.name)
            self.assertEqual(options.subCommand, tapname, unit.name)
            self.assertIsInstance(options.subOptions, makers[tapname].options, unit.name)

    def test_perDaemonLogging(self):
        """
        Each per-daemon unit logs to the journal through
        sysmon.ops.logs.journal, named after the unit, and takes site
        options from /etc/default/<unit> as $OPTIONS (optional file).
        """
        for unit in self.units.values():
            if EXPECTED[unit.name] is None:
                continue
            options = self.parse(unit)
            self.assertIs(options["logger"], logs.journal, unit.name)
            base = unit.name[:-len(".service")]
            self.assertEqual(unit.environment(), {"SYSMON_LOG_IDENTIFIER": base})
            self.assertEqual(unit.all("Service", "EnvironmentFile"), [f"-/etc/default/{base}"])
            self.assertEqual(unit.execStart()[-1], "$OPTIONS", unit.name)

    def test_tac(self):
        """
        The tac's unit: its journal entries come from the ini's [log]
        section, so twistd's own copy on standard output is dropped while
        standard error still reaches the journal; keepalive's processes
        outlive a restart; it runs in its state directory.
        """
        unit = self.units["sysmon.service"]
        self.assertEqual(unit.service("StandardOutput"), "null")
        self.assertEqual(unit.service("StandardError"), "journal")
        self.assertEqual(unit.service("KillMode"), "process")
        self.assertEqual(unit.service("WorkingDirectory"), "/var/lib/" + unit.service(
            "StateDirectory"))

    def test_typeNotify(self):
        """
        Type=notify exactly on the units whose process sends READY=1 (the
        others are Type=exec: started once exec'd); RunTests shows it with
        the real processes.
        """
        for unit in self.units.values():
            expected = "notify" if unit.name in NOTIFYING else "exec"
            self.assertEqual(unit.service("Type"), expected, unit.name)
            if expected == "notify":
                self.assertEqual(unit.service("NotifyAccess"), "main", unit.name)

    def test_watchdogSec(self):
        """
        WatchdogSec only on the watchdog and the tac, longer than
        watchdog.conf's default watchdog-timeout (so that the hardware acts
        first when the daemon stops feeding on purpose), and both restart
        on failure (which includes a watchdog timeout).
        """
        timeout = WatchdogConfig().deviceTimeout
        for unit in self.units.values():
            value = unit.service("WatchdogSec")
            if unit.name not in NOTIFYING:
                self.assertIsNone(value, unit.name)
                continue
            self.assertGreater(seconds(value), timeout, unit.name)
            self.assertEqual(unit.service("Restart"), "on-failure", unit.name)

    def test_users(self):
        """
        netdump, recvstats and sendstats run as sysmon with no capability;
        statd (both units) as root limited to CAP_NET_BIND_SERVICE; the
        watchdog, keepalive and the tac as root with every capability.
        """
        for unit in self.units.values():
            user = unit.service("User")
            bounding = unit.service("CapabilityBoundingSet")
            ambient = unit.service("AmbientCapabilities")
            tapname = EXPECTED[unit.name]
            if tapname in ("netdump", "recvstats", "sendstats"):
                self.assertEqual((user, unit.service("Group"), bounding, ambient),
                                 ("sysmon", "sysmon", "", ""), unit.name)
            elif tapname == "statd":
                self.assertEqual((user, bounding, ambient),
                                 ("root", "CAP_NET_BIND_SERVICE", ""), unit.name)
            else:
                self.assertEqual((user, bounding, ambient), ("root", None, None), unit.name)

    def test_sandbox(self):
        """
        The confined units cannot gain privileges and see a read-only
        system; the watchdog, keepalive and the tac (whose child programs
        act on the whole system with their rights) have no such sandbox.
        """
        for unit in self.units.values():
            settings = (unit.service("NoNewPrivileges"), unit.service("ProtectSystem"),
                        unit.service("PrivateTmp"))
            if unit.name in CONFINED:
                self.assertEqual(settings, ("yes", "strict", "yes"), unit.name)
                self.assertEqual(unit.service("SystemCallFilter"), "@system-service")
                self.assertIn("AF_UNIX", unit.words("Service", "RestrictAddressFamilies"),
                              f"{unit.name}: the journal is an AF_UNIX socket")
            else:
                self.assertEqual(settings, (None, None, None), unit.name)

    def test_writablePaths(self):
        """
        What a confined daemon writes is writable in its sandbox: netdump's
        dump directory and statd's database are in their StateDirectory
        (which systemd makes and gives to the User), recvstats' file in
        /dev/shm or a ReadWritePaths entry.
        """
        for unit in self.units.values():
            if unit.name not in CONFINED:
                continue
            writable = ["/var/lib/" + d for d in unit.words("Service", "StateDirectory")]
            writable += [p.lstrip("-") for p in unit.words("Service", "ReadWritePaths")]
            daemon = self.parse(unit).subOptions
            tapname = EXPECTED[unit.name]
            if tapname == "netdump":
                self.assertTrue(under(daemon.conf["dumpdir"], writable), writable)
            elif tapname == "statd":
                self.assertTrue(under(daemon["state-file"], writable), writable)
            elif tapname == "recvstats":
                # Both places shm.defaultPath() may choose.
                self.assertTrue(under("/var/shm/beostat", writable), writable)
                self.assertIsNone(unit.service("PrivateDevices"))

    def test_statdPair(self):
        """
        statd does not notify by itself; sysmon-statd-notify does, once per
        boot: it stays active after its process ends (a statd restart does
        not run it again), starts before statd, and both use one database.
        """
        statd = self.units["sysmon-statd.service"]
        notify = self.units["sysmon-statd-notify.service"]
        self.assertTrue(self.parse(statd).subOptions["no-notify"])
        self.assertTrue(self.parse(notify).subOptions["notify-only"])
        self.assertIn("sysmon-statd-notify.service", statd.words("Unit", "Wants"))
        self.assertIn("sysmon-statd.service", notify.words("Unit", "Before"))
        self.assertEqual(notify.service("RemainAfterExit"), "yes")
        self.assertEqual(self.parse(statd).subOptions["state-file"],
                         self.parse(notify).subOptions["state-file"])

    def test_keepalive(self):
        """
        Stopping keepalive stops only keepalive (KillMode=process): its
        processes keep running for the next keepalive; its control socket's
        directory and its log directory are made by systemd.
        """
        unit = self.units["sysmon-keepalive.service"]
        self.assertEqual(unit.service("KillMode"), "process")
        options = self.parse(unit).subOptions
        self.assertEqual(os.path.dirname(options["control"]),
                         "/run/" + unit.service("RuntimeDirectory"))
        self.assertEqual(options["log-dir"], "/var/log/" + unit.service("LogsDirectory"))
        self.assertEqual(os.path.dirname(options["table"]),
                         "/etc/" + unit.service("ConfigurationDirectory"))

    def test_watchdogUnit(self):
        """
        The watchdog's test and repair output directory (log-dir's
        default) is the unit's LogsDirectory, and it conflicts with the
        Debian watchdog daemons that would hold the same device.
        """
        unit = self.units["sysmon-watchdog.service"]
        self.assertEqual("/var/log/" + unit.service("LogsDirectory"),
                         WatchdogConfig().logDir)
        self.assertEqual(set(unit.words("Unit", "Conflicts")),
                         {"watchdog.service", "wd_keepalive.service"})


class VerifyTests(SynchronousTestCase):
    """
    C{systemd-analyze verify}, systemd's own judgement of the files.
    """

    def test_verify(self):
        """
        systemd-analyze verify finds nothing to say about any unit (unknown
        keys and bad values are only warnings, so its output must be empty,
        not just its status 0).  The units are copied with ExecStart's
        twistd replaced by this checkout's, since verify checks that the
        program exists.
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise self.skipTest("systemd-analyze is not installed (apt-get install systemd)")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.access(twistd, os.X_OK):
            raise self.skipTest(f"no twistd beside {sys.executable}")
        copy = tempfile.mkdtemp(prefix="sysmon-units")
        self.addCleanup(shutil.rmtree, copy)
        for name in EXPECTED:
            with open(os.path.join(UNITS, name)) as f:
                text = f.read()
            self.assertIn(TWISTD, text)
            with open(os.path.join(copy, name), "w") as f:
                f.write(text.replace(TWISTD, twistd))
        done = subprocess.run([analyze, "verify", *sorted(EXPECTED)], cwd=copy,
                              capture_output=True, text=True, timeout=120)
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""))


class RunTests(SynchronousTestCase):
    """
    Each per-daemon unit's own command, run as a child with
    C{$NOTIFY_SOCKET} and the unit's environment (paths and ports moved
    into the test's temporary directory by options added at the end, as
    $OPTIONS would): it logs to the journal, and it sends READY=1 exactly
    when its unit is Type=notify.
    """

    #: unit -> a text its start logs (the process has started).
    STARTED = {
        "sysmon-netdump.service": "netdump listening on",
        "sysmon-statd.service": "statd listening on",
        "sysmon-statd-notify.service": "notify mode: done",
        "sysmon-recvstats.service": "recvstats on port",
        "sysmon-sendstats.service": "sendstats reporting every",
        "sysmon-keepalive.service": "keepalive supervising",
        "sysmon-watchdog.service": "starting daemon (sysmon watchdog",
    }

    def setUp(self):
        self.units = units()
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.short = tempfile.mkdtemp(prefix="sru")  # for socket paths
        self.addCleanup(shutil.rmtree, self.short, True)

    def overrides(self, unit: Unit) -> list[str]:
        tapname = EXPECTED[unit.name]
        tmp = self.tmp
        if tapname == "netdump":
            config = os.path.join(tmp, "netdump.conf")
            open(config, "w").close()
            return ["--config", config, "--dumpdir", f"{tmp}/crash", "--port", "0",
                    "--addr", "127.0.0.1", "--secure", "0"]
        if tapname == "statd":
            # Never the host's rpcbind: --no-register.
            extra = [] if "--notify-only" in unit.execStart() else [
                "--port", "0", "--addr", "127.0.0.1", "--no-register"]
            return ["--state-file", f"{tmp}/statd.status", "--name", "localhost", *extra]
        if tapname == "recvstats":
            return ["--no-multicast", "--bind", "127.0.0.1", "--port", "0",
                    "--shm", f"{tmp}/beostat"]
        if tapname == "sendstats":
            return ["--master", f"127.0.0.1:{freePort()}"]
        if tapname == "keepalive":
            return ["--table", f"{tmp}/keepalive.data", "--control", f"{self.short}/control",
                    "--log-dir", f"{tmp}/log", "--script-dir", tmp]
        if tapname == "watchdog":
            config = os.path.join(tmp, "watchdog.conf")
            with open(config, "w") as f:
                f.write(f"interval = 1\nlog-dir = {tmp}/watchdog\n")
            return ["--config-file", config, "--no-action"]
        raise AssertionError(unit.name)

    def start(self, name: str) -> tuple[subprocess.Popen, FakeJournal, socket.socket]:
        unit = self.units[name]
        journal = FakeJournal(self)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notifyPath = os.path.join(self.short, "notify")
        notify.bind(notifyPath)
        argv = unit.execStart()
        self.assertEqual(argv[-1], "$OPTIONS")
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                *argv[1:-1], *self.overrides(unit)]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SYSMON_", "NOTIFY_", "WATCHDOG_"))}
        env.update(unit.environment(), PYTHONPATH=CHECKOUT, NOTIFY_SOCKET=notifyPath,
                   SYSMON_JOURNAL_SOCKET=journal.path)
        if unit.service("WatchdogSec"):
            env["WATCHDOG_USEC"] = str(int(seconds(unit.service("WatchdogSec")) * 1e6))
        err = open(os.path.join(self.tmp, "stderr"), "w+")
        self.addCleanup(err.close)
        child = subprocess.Popen(argv, cwd=self.tmp, env=env, stdout=subprocess.DEVNULL,
                                 stderr=err)
        child.errors = err
        self.addCleanup(stopProcess, child)
        return child, journal, notify

    def runUnit(self, name: str) -> tuple[list[bytes], list[dict[str, str]]]:
        """
        Start the unit's command, wait for its start line in the journal,
        stop it with SIGTERM as systemd does (unless it ends by itself),
        and return every notification it sent and every journal entry.
        """
        child, journal, notify = self.start(name)
        notes: list[bytes] = []
        entries: list[dict[str, str]] = []
        marker = self.STARTED[name]
        deadline = time.monotonic() + 60
        stopped = False
        while True:
            if time.monotonic() > deadline:
                child.errors.seek(0)
                raise AssertionError(f"{name}: {marker!r} (and the notifications) not in "
                                     f"time: {notes} {[e['MESSAGE'] for e in entries]}\n"
                                     f"{child.errors.read()[-3000:]}")
            ready, _, _ = select.select([journal.sock, notify], [], [], 0.2)
            if notify in ready:
                notes.append(notify.recv(4096))
            if journal.sock in ready:
                entries.append(asDict(journal.receive(0)))
                continue
            if notify in ready:
                continue
            if child.poll() is not None:
                break
            if not stopped and any(marker in e["MESSAGE"] for e in entries):
                if name in NOTIFYING:
                    # Let a few refreshes go by.
                    if sum(n == b"WATCHDOG=1" for n in notes) < 3:
                        continue
                if name != "sysmon-statd-notify.service":
                    waitHandler(child.pid, signal.SIGTERM)
                    child.send_signal(signal.SIGTERM)
                stopped = True
        child.errors.seek(0)
        self.assertIn(child.returncode, (0, -signal.SIGTERM),
                      f"{name}: {[e['MESSAGE'] for e in entries]}\n{child.errors.read()}")
        self.assertTrue(any(marker in e["MESSAGE"] for e in entries), entries)
        identifiers = {e["SYSLOG_IDENTIFIER"] for e in entries}
        self.assertEqual(identifiers, {name[:-len(".service")]})
        return notes, entries

    def assertSilent(self, name: str) -> None:
        notes, _ = self.runUnit(name)
        self.assertEqual(notes, [], f"{name} sends sd_notify messages: make it Type=notify")

    def test_netdump(self):
        """
        netdump sends no notification: Type=exec is right for it.
        """
        self.assertSilent("sysmon-netdump.service")

    def test_statd(self):
        """
        statd sends no notification.
        """
        self.assertSilent("sysmon-statd.service")

    def test_statdNotify(self):
        """
        statd's notify mode ends by itself (status 0, with no peer to
        notify) and sends no notification.
        """
        self.assertSilent("sysmon-statd-notify.service")

    def test_recvstats(self):
        """
        recvstats sends no notification.
        """
        self.assertSilent("sysmon-recvstats.service")

    def test_sendstats(self):
        """
        sendstats sends no notification.
        """
        self.assertSilent("sysmon-sendstats.service")

    def test_keepalive(self):
        """
        keepalive sends no notification.
        """
        self.assertSilent("sysmon-keepalive.service")

    def test_watchdog(self):
        """
        The watchdog sends READY=1 once started, then WATCHDOG=1 with each
        refresh (every interval, 1 s here, far more often than half of the
        unit's WatchdogSec), even with no device, and STOPPING=1 on SIGTERM.
        """
        start = time.monotonic()
        notes, _ = self.runUnit("sysmon-watchdog.service")
        elapsed = time.monotonic() - start
        self.assertTrue(notes[0].startswith(b"READY=1\n"), notes)
        self.assertEqual(notes[-1], b"STOPPING=1")
        beats = notes.count(b"WATCHDOG=1")
        self.assertGreaterEqual(beats, 3)
        watchdogSec = seconds(self.units["sysmon-watchdog.service"].service("WatchdogSec"))
        self.assertLess(elapsed / beats, watchdogSec / 2)
