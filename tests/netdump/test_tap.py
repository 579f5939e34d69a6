"""
Tests for C{twistd netdump}'s command line, configuration and service
(L{sysmon.netdump.tap}).
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sysmon.netdump import tap
from sysmon.testing import FakeReactor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Parent(dict):
    """
    Stands for twistd's own options.
    """

    def __init__(self):
        super().__init__(nodaemon=False, pidfile="twistd.pid")


def parse(argv, parent=None):
    options = tap.Options()
    options.parent = parent
    options.parseOptions(argv)
    return options


class OptionsTests(SynchronousTestCase):
    """
    Configuration file first, command line over it.
    """

    def config(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self):
        """
        With no file, the documented defaults.
        """
        conf = parse(["--config", self.config("")]).conf
        self.assertEqual(
            (conf["port"], conf["addr"], conf["max_concurrent_dumps"], conf["dumpdir"],
             conf["secure"], conf["space_check"], conf["window"]),
            (6666, "", 4, "/var/crash", True, True, 64),
        )

    def test_sampleConfig(self):
        """
        conf/netdump.conf parses without warnings.
        """
        conf = parse(["--config", os.path.join(ROOT, "conf", "netdump.conf")]).conf
        self.assertEqual(conf.warnings, [])
        self.assertEqual(conf["port"], 6666)

    def test_commandLineOverridesFile(self):
        """
        Options given override the file's keys; others keep the file's.
        """
        path = self.config('port = 7000\nmax_concurrent_dumps = 2\ndumpdir = "/srv/crash"\n'
                           "secure = 0\n")
        conf = parse(["--config", path, "--port", "7001", "--concurrent", "8",
                      "--secure", "1"]).conf
        self.assertEqual((conf["port"], conf["max_concurrent_dumps"], conf["dumpdir"],
                          conf["secure"]), (7001, 8, "/srv/crash", True))

    def test_badValueInFile(self):
        """
        A bad value in the file is a usage error naming file and line.
        """
        path = self.config("\nwindow = lots\n")
        e = self.assertRaises(usage.UsageError, parse, ["--config", path])
        self.assertEqual(
            str(e), f"{path}:2: bad value 'lots' for window: expected an integer from 1 to 4096"
        )

    def test_badValueOnCommandLine(self):
        """
        A bad option value names the option.
        """
        e = self.assertRaises(usage.UsageError, parse,
                              ["--config", self.config(""), "--port", "70000"])
        self.assertIn("command line (--port)", str(e))

    def test_missingExplicitConfig(self):
        """
        A config file named on the command line must exist.
        """
        e = self.assertRaises(usage.UsageError, parse, ["--config", "/nonexistent/netdump.conf"])
        self.assertIn("no such file", str(e))

    def test_unknownKeyWarns(self):
        """
        Unknown keys are kept as warnings (logged by makeService).
        """
        conf = parse(["--config", self.config("compress = 1\n")]).conf
        self.assertEqual(len(conf.warnings), 1)
        self.assertIn(":1: unknown key 'compress'", str(conf.warnings[0]))

    def test_daemonAndPidfileMapToTwistd(self):
        """
        daemon = no and pidfile from the file become twistd's own options,
        unless given to twistd; --daemon forces daemonizing.
        """
        path = self.config("daemon = no\npidfile = /run/netdump.pid\n")
        parent = Parent()
        parse(["--config", path], parent)
        self.assertEqual((parent["nodaemon"], parent["pidfile"]), (True, "/run/netdump.pid"))
        parent = Parent()
        parent["pidfile"] = "/elsewhere.pid"
        parse(["--config", path, "--daemon"], parent)
        self.assertEqual((parent["nodaemon"], parent["pidfile"]), (False, "/elsewhere.pid"))


class ServiceTests(SynchronousTestCase):
    """
    The service binds in privilegedStartService and releases on stop.
    """

    def test_lifecycle(self):
        """
        The UDP port is bound before startService (so twistd can drop
        privileges after), with the configured port and address; stopping
        closes it and fires.
        """
        dumpdir = os.path.abspath(self.mktemp())
        options = parse(["--config", os.devnull, "--port", "16666", "--addr", "127.0.0.1",
                         "--dumpdir", dumpdir])
        reactor = FakeReactor()
        service = tap.makeService(options, reactor=reactor)
        service.privilegedStartService()
        [listen] = reactor.udp
        self.assertEqual((listen.port, listen.interface), (16666, "127.0.0.1"))
        self.assertFalse(os.path.exists(dumpdir))
        service.startService()
        self.assertTrue(os.path.isdir(os.path.join(dumpdir, "console")))
        d = service.stopService()
        self.successResultOf(d)
        self.assertFalse(listen.transport.listening)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_badHostsFile(self):
        """
        A bad hosts file is a usage error while the options are read (so
        twistd prints one line, not a traceback from makeService).
        """
        hosts = self.mktemp()
        with open(hosts, "w") as f:
            f.write("n1 10.0.0.1 node=x\n")
        e = self.assertRaises(usage.UsageError, parse, ["--config", os.devnull, "--hosts", hosts])
        self.assertIn(f"{hosts}:1:", str(e))

    def test_hostsAndDirectory(self):
        """
        A hosts file and an LDAP directory together are refused: one source
        of magics.
        """
        hosts = self.mktemp()
        with open(hosts, "w") as f:
            f.write("n1 10.0.0.1\n")
        e = self.assertRaises(usage.UsageError, parse, [
            "--config", os.devnull, "--hosts", hosts, "--directory", "ldap://127.0.0.1/dc=x"])
        self.assertIn("not both", str(e))

    def test_directoryConfigKey(self):
        """
        The LDAP directory can be chosen in netdump.conf; a bad settings file
        is a usage error naming its file and line.
        """
        settings = self.mktemp()
        with open(settings, "w") as f:
            f.write("url = ldap://127.0.0.1:1/dc=x\nttl = soon\n")
        conf = self.mktemp()
        with open(conf, "w") as f:
            f.write(f"directory_config = {settings}\n")
        e = self.assertRaises(usage.UsageError, parse, ["--config", conf])
        self.assertIn(f"{settings}:2:", str(e))
