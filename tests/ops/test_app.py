"""
Tests for L{sysmon.ops.app}: the tac's application, built from the ini
through each daemon's own plugin.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import internet, service
from twisted.internet import task
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sysmon.beostat.recv import RecvstatsService
from sysmon.beostat.send import SendstatsService
from sysmon.netdump.tap import NetdumpService
from sysmon.ops import app, ini
from sysmon.ops.ini import IniError
from sysmon.statd.tap import StatdService
from sysmon.watchdog.service import WatchdogService


def section(text: str, path: str = "t.ini") -> ini.Section:
    [found] = ini.parse(text, path)
    return found


class BuildDaemonTests(SynchronousTestCase):
    """
    L{app.buildDaemon} builds a daemon the way its twistd plugin does, and
    pins each refusal on its ini line.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.netdumpConf = os.path.join(self.dir, "netdump.conf")
        with open(self.netdumpConf, "w") as f:
            f.write("window = 16\n")

    def netdump(self, *lines: str) -> str:
        return "\n".join(["[netdump]", f"config = {self.netdumpConf}", *lines]) + "\n"

    def assertRefused(self, text: str, line: int, key: str | None, message: str) -> IniError:
        with self.assertRaises(IniError) as caught:
            app.buildDaemon(section(text))
        error = caught.exception
        self.assertEqual((error.line, error.key), (line, key), str(error))
        self.assertIn(message, str(error))
        return error

    def test_thePlugin(self) -> None:
        """
        The maker used is the one C{twistd netdump} finds: the plugin
        pointing at C{sysmon.netdump.tap}.
        """
        maker = app.findMaker("netdump")
        self.assertEqual((maker.tapname, maker.module), ("netdump", "sysmon.netdump.tap"))
        self.assertEqual(app.findMaker("recvstats").module, "sysmon.beostat.tap.recvstats")
        self.assertRaises(LookupError, app.findMaker, "nosuchdaemon")

    def test_netdump(self) -> None:
        """
        Keys become the daemon's options: the service listens on the port
        given, keeps dumps where told, and still reads its config file
        (window 16 from it) under what the ini says.
        """
        dumps = os.path.join(self.dir, "crash")
        built = app.buildDaemon(section(self.netdump(
            f"dumpdir = {dumps}", "port = 16666", "space_check = 0", "timeout = 2.5")))
        self.assertIsInstance(built, NetdumpService)
        self.assertEqual(built.portNumber, 16666)
        self.assertEqual(built.server.store.root, dumps)
        self.assertEqual(built.server.settings.window, 16)
        self.assertEqual(built.server.settings.timeout, 2.5)
        self.assertFalse(built.server.settings.spaceCheck)

    def test_flagsAndRepeats(self) -> None:
        """
        A flag set to yes is given, one set to no is not; a repeated key is
        given each time.
        """
        statd = app.buildDaemon(section(
            "[statd]\nno-notify = yes\nno-register = no\nallow_callback = 200\n"
            "allow-callback = 300\nstate-file = " + os.path.join(self.dir, "s.db") + "\n"))
        self.assertIsInstance(statd, StatdService)
        self.assertTrue(statd.options["no-notify"])
        self.assertFalse(statd.options["no-register"])
        self.assertEqual(statd.options["allow-callback"], [200, 300])
        send = app.buildDaemon(section("[sendstats]\nmaster = 127.0.0.1:3040\n"
                                       "master = localhost\nrate = 2\n"))
        self.assertIsInstance(send, SendstatsService)
        self.assertEqual(send.masters, [("127.0.0.1", 3040), ("localhost", 3040)])

    def test_unknownKey(self) -> None:
        """
        A key that is not one of the daemon's options names its line, with
        the nearest option.
        """
        error = self.assertRefused(self.netdump("dumpdirr = /x"), 3, "dumpdirr",
                                   "netdump has no option --dumpdirr (did you mean dumpdir?)")
        self.assertTrue(str(error).startswith("t.ini:3: [netdump] dumpdirr: "), str(error))

    def test_badValue(self) -> None:
        """
        A value the option's own coercion refuses names its line, even with
        good lines after it.
        """
        self.assertRefused(self.netdump("port = 70000", "window = 8"), 3, "port",
                           "bad value '70000'")
        self.assertRefused("[recvstats]\nshm = /tmp/x\nnodes = 0\n", 3, "nodes",
                           "must be at least 1")

    def test_badFlag(self) -> None:
        """
        A flag with a value other than yes/no names its line.
        """
        self.assertRefused("[watchdog]\nno-action = maybe\n", 2, "no-action", "'maybe' is not yes")

    def test_crossCheck(self) -> None:
        """
        A refusal of the whole command line (the daemon's C{postOptions})
        names the line of the key it is about.
        """
        self.assertRefused("[recvstats]\nport = 3040\ngroup = 10.1.2.3\nshm = /tmp/x\n", 3,
                           "group", "'10.1.2.3' is not an IPv4 multicast address")
        self.assertRefused(f"[recvstats]\nshm = /tmp/x\nhosts = {self.netdumpConf}\n"
                           "directory = ldap://127.0.0.1:1\n", 4, "directory", "")

    def test_valueNamed(self) -> None:
        """
        A refusal that names no key but quotes a value is pinned on that
        value's line.
        """
        missing = os.path.join(self.dir, "nowhere.conf")
        self.assertRefused(f"[watchdog]\nno-action = yes\nconfig-file = {missing}\n", 3,
                           "config-file", "cannot open")

    def test_optionNamed(self) -> None:
        """
        A refusal naming the option (as C{--key PATH: ...}) is pinned on
        that key's line.
        """
        self.assertRefused("\n[keepalive]\nclean = yes\ncontrol = /" + "c" * 120 + "\n", 4,
                           "control", "at most 107 bytes")

    def test_noKeyNamed(self) -> None:
        """
        A refusal about no line in particular is pinned on the header.
        """
        class Options(usage.Options):
            optParameters = [["size", None, "1", "A size."]]

            def postOptions(self) -> None:
                raise usage.UsageError("the moon is in the wrong phase")

        maker = service.ServiceMaker("fake", "fake", "A fake daemon.", "fake")
        self.patch(service.ServiceMaker, "options", property(lambda self: Options))
        with self.assertRaises(IniError) as caught:
            app.buildDaemon(section("# x\n[fake]\nsize = 2\n"), maker)
        self.assertEqual(str(caught.exception),
                         "t.ini:2: [fake]: the moon is in the wrong phase")

    def test_twistdOwn(self) -> None:
        """
        twistd's own options are refused in a tac with what to do instead.
        """
        self.assertRefused(self.netdump("daemon = yes"), 3, "daemon",
                           "twistd's own option, not netdump's: give twistd -n")
        self.assertRefused(self.netdump("pidfile = /run/x.pid"), 3, "pidfile", "twistd --pidfile")


class FakeNotifier:
    enabled = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, ...]] = []

    def send(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True


class ReadyTests(SynchronousTestCase):
    """
    L{app.Ready} tells the service manager the application is up, and that
    it is alive when the unit has a watchdog.
    """

    def test_ready(self) -> None:
        """
        C{READY=1} with the daemons' names when started, C{STOPPING=1} when
        stopped; no C{WATCHDOG=1} without an interval.
        """
        notifier, clock = FakeNotifier(), task.Clock()
        ready = app.Ready(["netdump", "http"], notifier, None, clock)
        ready.startService()
        clock.advance(100)
        ready.stopService()
        self.assertEqual(notifier.sent, [("READY=1", "STATUS=running netdump, http"),
                                         ("STOPPING=1",)])

    def test_watchdog(self) -> None:
        """
        With an interval, C{WATCHDOG=1} goes out at once and every half
        interval, until stopped.
        """
        notifier, clock = FakeNotifier(), task.Clock()
        ready = app.Ready(["statd"], notifier, 10.0, clock)
        ready.startService()
        clock.advance(5)
        clock.advance(5)
        ready.stopService()
        clock.advance(50)
        self.assertEqual([f for f in notifier.sent if f == ("WATCHDOG=1",)], [("WATCHDOG=1",)] * 3)
        self.assertEqual(clock.getDelayedCalls(), [])


class ApplicationTests(SynchronousTestCase):
    """
    L{app.makeApplication} composes the enabled daemons, the HTTP port and
    the notifications under one application.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.observers: list[Any] = []

    def write(self, text: str) -> str:
        path = os.path.join(self.dir, "sysmon.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def make(self, text: str, environ: dict[str, str] | None = None) -> service.Application:
        return app.makeApplication(self.write(text), reactor=task.Clock(),
                                   addObserver=self.observers.append, environ=environ or {})

    def names(self, application: service.Application) -> list[str]:
        return [s.name for s in service.IServiceCollection(application)]

    def test_composed(self) -> None:
        """
        Enabled daemons are children named after their sections, in start
        order (the watchdog last among the daemons), then the HTTP port and
        the readiness notifier; C{enabled = no} leaves a daemon out.
        """
        conf = os.path.join(self.dir, "wd.conf")
        with open(conf, "w") as f:
            f.write(f"log-dir = {self.dir}/wdlog\n")
        application = self.make(
            f"[watchdog]\nno-action = yes\nconfig-file = {conf}\n"
            f"[recvstats]\nenabled = yes\nno-multicast = yes\nshm = {self.dir}/shm\n"
            f"[statd]\nenabled = no\nport = 1\n"
            f"[sendstats]\nmaster = 127.0.0.1\n"
            f"[http]\nport = 18080\ninterface = 127.0.0.1\n")
        collection = service.IServiceCollection(application)
        self.assertEqual(self.names(application),
                         ["recvstats", "sendstats", "watchdog", "http", None])
        self.assertIsInstance(collection.getServiceNamed("recvstats"), RecvstatsService)
        self.assertIsInstance(collection.getServiceNamed("watchdog"), WatchdogService)
        http = collection.getServiceNamed("http")
        self.assertIsInstance(http, internet.TCPServer)
        self.assertEqual((http.args[0], http.kwargs["interface"]), (18080, "127.0.0.1"))

    def test_noHttp(self) -> None:
        """
        Without an C{[http]} section (or with it disabled) there is no port.
        """
        application = self.make(f"[sendstats]\nmaster = 127.0.0.1\n[http]\nenabled = no\n"
                                f"port = 1\n")
        self.assertEqual(self.names(application), ["sendstats", None])

    def test_unknownSection(self) -> None:
        """
        A section sysmon does not know is refused at its header.
        """
        with self.assertRaises(IniError) as caught:
            self.make("[http]\nport = 8080\n\n[netdmp]\nport = 1\n")
        self.assertEqual(caught.exception.line, 4)
        self.assertIn("[netdmp]: not a section sysmon knows; the sections are [netdump]",
                      str(caught.exception))

    def test_httpErrors(self) -> None:
        """
        A bad port or an unknown key of C{[http]} names its line.
        """
        for text, line, message in [("[http]\nport = http\n", 2, "'http': "),
                                    ("[http]\nport = 1\nlisten = x\n", 3, "not a key of [http]")]:
            with self.assertRaises(IniError) as caught:
                self.make(text)
            self.assertEqual(caught.exception.line, line)
            self.assertIn(message, str(caught.exception))

    def test_logSection(self) -> None:
        """
        The C{[log]} section adds its observers (here a JSON file) at the
        level given; a bad level or key names its line.
        """
        self.make(f"[log]\njournal = no\njson = {self.dir}/log.json\nlevel = warn\n")
        self.assertEqual(len(self.observers), 1)
        settings = app.LogSettings.fromSection(section("[log]\njournal = auto\nlevel = error\n"))
        self.assertEqual((settings.journal, settings.level), ("auto", LogLevel.error))
        for text, line in [("[log]\nlevel = loud\n", 2), ("[log]\njournal = x\n", 2),
                           ("[log]\nsyslog = yes\nfile = x\n", 3)]:
            with self.assertRaises(IniError) as caught:
                self.make(text)
            self.assertEqual(caught.exception.line, line, str(caught.exception))

    def test_watchdogOwnsWatchdog(self) -> None:
        """
        With C{$WATCHDOG_USEC} the application pings the service manager
        itself, unless the watchdog daemon is enabled (it pings while the
        system is healthy).
        """
        environ = {"WATCHDOG_USEC": "4000000"}
        plain = self.make("[sendstats]\nmaster = 127.0.0.1\n", environ)
        [ready] = [s for s in service.IServiceCollection(plain) if isinstance(s, app.Ready)]
        self.assertEqual(ready.interval, 4.0)
        conf = os.path.join(self.dir, "wd.conf")
        with open(conf, "w") as f:
            f.write(f"log-dir = {self.dir}/wdlog\n")
        withWatchdog = self.make(f"[watchdog]\nno-action = yes\nconfig-file = {conf}\n",
                                 environ)
        [ready] = [s for s in service.IServiceCollection(withWatchdog)
                   if isinstance(s, app.Ready)]
        self.assertIsNone(ready.interval)

    def test_loadExits(self) -> None:
        """
        L{app.load} (what the tac calls) turns an ini error into a one-line
        exit message instead of a traceback.
        """
        path = self.write("[netdump]\nport = x\n")
        with self.assertRaises(SystemExit) as caught:
            app.load(path)
        self.assertTrue(str(caught.exception.code).startswith(f"sysmon: {path}:2: [netdump] port: "),
                        caught.exception.code)


