"""
Tests for L{sysmon.directory.cli}, the C{sysmon-hosts} command, run as a
real process (C{python -m sysmon.directory.cli}) against a real OpenLDAP
slapd (L{tests.directory.slapd}) over C{ldap://}, C{ldaps://} and
StartTLS, and against hosts files written by the tests: lookups by
address, name and node, listings parsed back field by field, C{check}'s
report and its one-line reasons (invalid credentials, untrusted
certificate, no such base, a server that is down or hung, measured against
the settings' timeout), and the usage errors.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from sysmon.directory import cli
from sysmon.directory.ldap import Check, LDAPSettings
from sysmon.testing import makeTestCA
from tests.directory.slapd import HOSTS, READER, SUFFIX, Slapd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The settings' timeout in the tests that measure how long a dead or hung
# server keeps sysmon-hosts waiting.
TIMEOUT = 2.0

ANONYMOUS_NOTE = (
    "sysmon-hosts: note: bound anonymously; the server may hide the base and its hosts "
    "from anonymous binds: set bind_dn/password_file?"
)


@attrs.frozen
class Run:
    """
    One finished C{sysmon-hosts} process.

    @ivar status: its exit status.
    @ivar out: its stdout.
    @ivar err: its stderr.
    @ivar seconds: how long it ran, start to exit.
    """

    status: int
    out: str
    err: str
    seconds: float


def sysmonHosts(*args: str, timeout: float = 60) -> Run:
    """
    Run C{sysmon-hosts ARGS} as its own process with the checkout first on
    its path, and wait for it.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("COLUMNS", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sysmon.directory.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def machineRows(text: str) -> list[list[str]]:
    """
    The fields of each line of a C{--machine} listing.
    """
    return [line.split("\t") for line in text.splitlines()]


def twoLines(case: SynchronousTestCase, text: str) -> tuple[str, str]:
    """
    The two lines of C{text}, failing C{case} if there are not two.
    """
    lines = text.splitlines()
    case.assertEqual(len(lines), 2, text)
    return lines[0], lines[1]


def reportLines(text: str) -> dict[str, str]:
    """
    C{label: value} lines of a human report (lookup, check) as a dict.
    """
    fields = {}
    for line in text.splitlines():
        if not line.startswith(" "):
            label, sep, value = line.partition(":")
            if sep:
                fields[label] = value.strip()
    return fields


HOSTS_TEXT = """\
# hosts for sysmon-hosts' tests
node01    10.1.0.1          node=1  magic=0123456789abcdef  rack=r1
node02    2001:db8::2       node=2  magic=fedcba9876543210
gateway   10.1.0.254        role=gw
"""


class HostsFileTests(SynchronousTestCase):
    """
    C{--hosts FILE}: the file backend, the same commands.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        with open(self.path, "w") as f:
            f.write(HOSTS_TEXT)

    def test_lookupByAddressNameNode(self) -> None:
        """
        An IP address is looked up by address (an IPv6 address in any of its
        spellings), a number by node, anything else by name; the record
        shows name, address, node, magic and the other attributes.
        """
        run = sysmonHosts("--hosts", self.path, "lookup", "2001:db8:0:0:0::2")
        self.assertEqual((run.status, run.err), (0, ""))
        self.assertEqual(
            reportLines(run.out),
            {"name": "node02", "address": "2001:db8::2", "node": "2",
             "magic": "fedcba9876543210"},
        )
        run = sysmonHosts("lookup", "1", "--hosts", self.path, "--machine")
        self.assertEqual((run.status, run.out), (0, "node01\t10.1.0.1\t1\t0123456789abcdef\n"))
        run = sysmonHosts("--hosts", self.path, "lookup", "gateway")
        self.assertEqual(run.status, 0)
        self.assertEqual(
            reportLines(run.out),
            {"name": "gateway", "address": "10.1.0.254", "node": "-", "magic": "-",
             "role": "gw"},
        )

    def test_unknownHost(self) -> None:
        """
        A host that is not there: exit status 1, C{unknown host KEY} on
        stderr, nothing on stdout.
        """
        for key in ("10.9.9.9", "node99", "99"):
            run = sysmonHosts("--hosts", self.path, "lookup", "--machine", key)
            self.assertEqual(
                (run.status, run.out, run.err), (1, "", f"sysmon-hosts: unknown host {key}\n")
            )

    def test_lookupBy(self) -> None:
        """
        C{--by name} looks a number up as a name, not as a node.
        """
        with open(self.path, "a") as f:
            f.write("7 10.1.0.7 node=3\n")
        self.assertEqual(
            sysmonHosts("--hosts", self.path, "lookup", "--machine", "--by", "name", "7").out,
            "7\t10.1.0.7\t3\t-\n",
        )

    def test_list(self) -> None:
        """
        C{list}: a header and aligned columns in the file's order;
        C{--machine}: four tab-separated fields per host, C{-} for what a
        host lacks.
        """
        run = sysmonHosts("--hosts", self.path, "list")
        self.assertEqual(run.status, 0)
        self.assertEqual(
            run.out,
            "NAME     ADDRESS      NODE  MAGIC\n"
            "node01   10.1.0.1        1  0123456789abcdef\n"
            "node02   2001:db8::2     2  fedcba9876543210\n"
            "gateway  10.1.0.254      -  -\n",
        )
        run = sysmonHosts("--hosts", self.path, "list", "--machine")
        self.assertEqual(run.status, 0)
        self.assertEqual(
            machineRows(run.out),
            [["node01", "10.1.0.1", "1", "0123456789abcdef"],
             ["node02", "2001:db8::2", "2", "fedcba9876543210"],
             ["gateway", "10.1.0.254", "-", "-"]],
        )

    def test_listEmpty(self) -> None:
        """
        An empty directory lists as "no hosts" (machine: nothing), exit
        status 0.
        """
        with open(self.path, "w") as f:
            f.write("# nothing yet\n")
        run = sysmonHosts("--hosts", self.path, "list")
        self.assertEqual((run.status, run.out), (0, f"no hosts in {self.path}\n"))
        run = sysmonHosts("--hosts", self.path, "list", "--machine")
        self.assertEqual((run.status, run.out), (0, ""))

    def test_check(self) -> None:
        """
        C{check} on a hosts file reads it and counts its hosts.
        """
        run = sysmonHosts("--hosts", self.path, "check")
        self.assertEqual((run.status, run.err), (0, ""))
        self.assertEqual(reportLines(run.out), {"hosts file": self.path, "hosts": "3"})

    def test_badLine(self) -> None:
        """
        A bad line in the hosts file: exit status 1 and one line on stderr
        naming file and line, whatever the command; no traceback.
        """
        with open(self.path, "a") as f:
            f.write("node03 10.1.0.3 node=x\n")
        for command in (["check"], ["list"], ["lookup", "node01"]):
            run = sysmonHosts("--hosts", self.path, *command)
            self.assertEqual((run.status, run.out), (1, ""), command)
            self.assertEqual(
                run.err,
                f"sysmon-hosts: {self.path}:5: bad node 'x': expected an integer "
                "from 0 to 2147483647\n",
            )

    def test_missingFile(self) -> None:
        """
        A hosts file that does not exist: exit status 1, the path and the
        reason.
        """
        missing = os.path.abspath(self.mktemp())
        run = sysmonHosts("--hosts", missing, "list")
        self.assertEqual(
            (run.status, run.err),
            (1, f"sysmon-hosts: {missing}: cannot read hosts file: No such file or directory\n"),
        )

    def test_escaping(self) -> None:
        """
        A value that is C{-} itself is written C{\\-} in the machine format,
        so it is not taken for a missing one; a control character in a
        human report is shown escaped.
        """
        with open(self.path, "w") as f:
            f.write("- 10.1.0.9 note=a\x1bb\n")
        self.assertEqual(
            sysmonHosts("--hosts", self.path, "list", "--machine").out, "\\-\t10.1.0.9\t-\t-\n"
        )
        self.assertIn("note:     a\\x1bb\n", sysmonHosts("--hosts", self.path, "lookup", "-").out)


class UsageTests(SynchronousTestCase):
    """
    Command lines that are not sysmon-hosts forms exit 2 with the reason
    and the usage, and read no directory.
    """

    def test_usageErrors(self) -> None:
        """
        Each malformed command line gives its reason on stderr, the usage
        and exit status 2 (parsed in this process; the directory named does
        not exist, so reading it would give 1, not 2).
        """
        cases = [
            (["--hosts", "h"], "no command: give lookup KEY, list or check"),
            (["--hosts", "h", "show"], "unknown command 'show': give lookup KEY, list or check"),
            (["--hosts", "h", "lookup"], "lookup needs one KEY (an address, node number or name)"),
            (["--hosts", "h", "lookup", "a", "b"], "lookup takes one KEY, not 2"),
            (["--hosts", "h", "list", "x"], "list takes no arguments, not 'x'"),
            (["--hosts", "h", "check", "--machine"], "--machine goes only with lookup and list"),
            (["--hosts", "h", "list", "--by", "name"], "--by goes only with lookup"),
            (["--hosts", "h", "lookup", "--by", "mac", "x"],
             "--by takes address, name or node, not 'mac'"),
            (["--hosts", "h", "lookup", "--by", "address", "node01"],
             "--by address: 'node01' is not an IP address"),
            (["--hosts", "h", "lookup", "--by", "node", "-1"],
             "--by node: '-1' is not a node number (0 to 2147483647)"),
            (["--hosts", "h", "--directory", "ldap://x/dc=x", "list"],
             "--hosts cannot go with --directory or --directory-config: give one source"),
            (["--directory-config", "c", "--hosts", "h", "list"],
             "--hosts cannot go with --directory or --directory-config: give one source"),
            (["--hosts", "", "list"], "--hosts needs a non-empty value"),
            (["--hosts", "h", "--bogus", "list"], "unrecognized arguments: --bogus"),
            (["list", "--hosts"], "argument --hosts: expected one argument"),
        ]
        for argv, message in cases:
            out, err = io.StringIO(), io.StringIO()
            self.assertEqual(cli.main(argv, out=out, err=err), 2, argv)
            self.assertEqual(out.getvalue(), "")
            self.assertEqual(
                err.getvalue(),
                f"sysmon-hosts: {message}\n{cli.USAGE}"
                "Try 'sysmon-hosts --help' for the sources, commands and exit statuses.\n",
            )

    def test_usageErrorProcess(self) -> None:
        """
        As a process, a usage error exits 2 with one reason line and the
        usage, no traceback.
        """
        run = sysmonHosts("--hosts", "h", "--directory", "ldap://127.0.0.1/dc=x", "check")
        self.assertEqual((run.status, run.out), (2, ""))
        self.assertTrue(run.err.startswith("sysmon-hosts: --hosts cannot go with"), run.err)
        self.assertIn("usage: sysmon-hosts", run.err)
        self.assertNotIn("Traceback", run.err)

    def test_defaultSettings(self) -> None:
        """
        With no source the default settings file is used when it exists;
        when it does not, the usage error says what to give.
        """
        present = self.mktemp()
        open(present, "w").close()
        self.assertEqual(
            cli.parse(["check"], defaultConfig=present), cli.Request("check", configFile=present)
        )
        self.assertEqual(
            cli.parse(["lookup", "1", "--directory", "ldap://h/dc=x"], defaultConfig=present),
            cli.Request("lookup", field="node", value=1, key="1", url="ldap://h/dc=x"),
        )
        absent = self.mktemp()
        with self.assertRaises(cli.UsageError) as caught:
            cli.parse(["list"], defaultConfig=absent)
        self.assertEqual(
            str(caught.exception),
            "no directory: give --directory URL, --directory-config FILE or --hosts FILE "
            f"({absent} does not exist)",
        )

    def test_classify(self) -> None:
        """
        KEY is an address when it parses as one (normalized), a node number
        when it is digits, else a name.
        """
        for key, field, value in [
            ("10.1.0.1", "address", "10.1.0.1"),
            ("2001:DB8:0::1", "address", "2001:db8::1"),
            ("::ffff:10.1.0.1", "address", "10.1.0.1"),
            ("0", "node", 0),
            ("17", "node", 17),
            ("node01", "name", "node01"),
            ("-1", "name", "-1"),
            ("99999999999", "name", "99999999999"),
        ]:
            request = cli.parse(["--hosts", "h", "lookup", key])
            self.assertEqual((request.field, request.value, request.key), (field, value, key))

    def test_help(self) -> None:
        """
        C{--help} prints the help on stdout and exits 0; it names the
        sources, the commands, the machine format's fields and the exit
        statuses.
        """
        run = sysmonHosts("--help")
        self.assertEqual((run.status, run.err), (0, ""))
        self.assertEqual(run.out, cli.HELP)
        for text in ("--directory URL", "--directory-config FILE", "--hosts FILE",
                     "lookup KEY", "list", "check", "name  address  node  magic",
                     "Exit status:", "2  usage error"):
            self.assertIn(text, run.out)


class _RecordedCheck:
    """
    An L{LDAPClient} stand-in for L{CheckReportTests} whose C{check}
    answers what a server would in a case that the test slapd cannot
    produce.
    """

    def __init__(self, check: Check) -> None:
        self._check = check
        self.skipped: list[str] = []

    def connect(self) -> None:
        pass

    def check(self) -> Check:
        return self._check

    def close(self) -> None:
        pass


class CheckReportTests(SynchronousTestCase):
    """
    What C{check} makes of an answer: the report and its warnings.
    """

    def report(self, check: Check, **settings: Any) -> tuple[str, str]:
        """
        C{check}'s report (stdout, stderr) for this answer.
        """
        ldapSettings = LDAPSettings(url=check.url, base=check.base, **settings)
        source = cli._Directory(ldapSettings, _RecordedCheck(check))  # type: ignore[arg-type]
        out, err = io.StringIO(), io.StringIO()
        source.check(out, err)
        return out.getvalue(), err.getvalue()

    def test_anonymousSeesNothing(self) -> None:
        """
        An anonymous bind that sees the base but no host in it (a server
        whose ACL discloses the base but no entry) is reported with a
        warning saying what to set.
        """
        out, err = self.report(Check(
            url="ldaps://ldap.example", security="ldaps", boundAs="anonymous",
            base="ou=hosts,dc=example", hosts=0, skipped=[], seconds=0.0125,
        ))
        self.assertEqual(
            out,
            "url:         ldaps://ldap.example\n"
            "security:    ldaps (the system's CAs)\n"
            "bound as:    anonymous\n"
            "base:        ou=hosts,dc=example\n"
            "filter:      (objectClass=ipHost)\n"
            "hosts:       0\n"
            "skipped:     0\n"
            "round trip:  0.013 s\n",
        )
        self.assertEqual(
            err, "sysmon-hosts: warning: anonymous sees no hosts: set bind_dn/password_file?\n"
        )

    def test_skipped(self) -> None:
        """
        Each skipped entry is listed under the count, escaped; hosts seen
        means no warning.
        """
        out, err = self.report(Check(
            url="ldap://ldap.example", security="StartTLS", boundAs="cn=sysmon",
            base="dc=example", hosts=2, skipped=["cn=a,dc=example: no cn", "cn=b\n: x"],
            seconds=1.0,
        ), startTLS=True, caFile="/etc/ca.pem", bindDN="cn=sysmon")
        self.assertIn("security:    StartTLS (CA file /etc/ca.pem)\n", out)
        self.assertIn("skipped:     2\n  cn=a,dc=example: no cn\n  cn=b\\n: x\n", out)
        self.assertEqual(err, "")


def writeSettings(case: SynchronousTestCase, slapd: Slapd, **keys: object) -> str:
    """
    A directory settings file for C{slapd}: its C{ldap://} URL, the hosts'
    base, bound as the reader with its password file and a timeout of
    L{TIMEOUT}, unless C{keys} says otherwise (a key given as L{None} is
    left out).
    """
    settings: dict[str, object] = {
        "url": slapd.url,
        "base": HOSTS,
        "bind_dn": READER,
        "password_file": slapd.passwordFile(),
        "timeout": TIMEOUT,
    }
    settings.update(keys)
    path = os.path.abspath(case.mktemp())
    with open(path, "w") as f:
        for key, value in settings.items():
            if value is not None:
                f.write(f"{key} = {value}\n")
    return path


class LDAPTests(SynchronousTestCase):
    """
    C{sysmon-hosts} against a real slapd holding three hosts (one without
    the C{sysmonHost} class) and one entry that is not a usable host.
    """

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.slapd.start()
        self.slapd.addHost("node01", "10.1.0.1", node=1, magic=0x0123456789ABCDEF)
        self.slapd.addHost("node02", "2001:db8::2", node=2, magic=0xFEDCBA9876543210)
        self.slapd.addHost("plain", "10.1.0.3", aux=False)
        self.settings = writeSettings(self, self.slapd)

    def test_lookup(self) -> None:
        """
        Lookups by address (any spelling of it), by name and by node give
        the host's name, address, node and magic (and its DN); a host that
        is not there gives exit status 1 and C{unknown host KEY}.
        """
        run = sysmonHosts("--directory-config", self.settings, "lookup", "2001:DB8:0::2")
        self.assertEqual((run.status, run.err), (0, ""))
        fields = reportLines(run.out)
        self.assertEqual(
            (fields["name"], fields["address"], fields["node"], fields["magic"]),
            ("node02", "2001:db8::2", "2", "fedcba9876543210"),
        )
        self.assertEqual(fields["dn"], f"cn=node02,{HOSTS}")
        for key in ("10.1.0.1", "node01", "1"):
            run = sysmonHosts("--directory-config", self.settings, "lookup", "--machine", key)
            self.assertEqual(
                (run.status, run.out, run.err),
                (0, "node01\t10.1.0.1\t1\t0123456789abcdef\n", ""),
                key,
            )
        run = sysmonHosts("--directory-config", self.settings, "lookup", "--machine", "plain")
        self.assertEqual(machineRows(run.out), [["plain", "10.1.0.3", "-", "-"]])
        for key in ("10.1.0.99", "node99", "99"):
            run = sysmonHosts("--directory-config", self.settings, "lookup", key)
            self.assertEqual(
                (run.status, run.out, run.err), (1, "", f"sysmon-hosts: unknown host {key}\n")
            )

    def test_lookupURL(self) -> None:
        """
        C{--directory URL} with the base as the URL's path works alone (an
        anonymous bind, from which this slapd hides the base: exit status 1,
        the server's answer and a note on what to set) and overrides the
        settings file's URL.
        """
        run = sysmonHosts("--directory", f"{self.slapd.url}/{HOSTS}", "lookup", "node01")
        self.assertEqual((run.status, run.out), (1, ""))
        first, note = twoLines(self, run.err)
        self.assertTrue(first.startswith(f"sysmon-hosts: LDAP server {self.slapd.url}"), first)
        self.assertIn(HOSTS, first)
        self.assertEqual(note, ANONYMOUS_NOTE)
        elsewhere = writeSettings(self, self.slapd, url="ldap://127.0.0.1:1")
        run = sysmonHosts("--directory-config", elsewhere, "--directory", self.slapd.url,
                          "lookup", "--machine", "node01")
        self.assertEqual((run.status, run.out), (0, "node01\t10.1.0.1\t1\t0123456789abcdef\n"))

    def test_list(self) -> None:
        """
        C{list} shows every host in aligned columns; C{--machine} gives
        four fields per host that parse back to the hosts added; an entry
        that cannot be read is left out and named on stderr with why.
        """
        self.slapd.addHost("broken", "10.1.0.4", node=4, magic="not-hex")
        run = sysmonHosts("--directory-config", self.settings, "list", "--machine")
        self.assertEqual(run.status, 0)
        self.assertEqual(
            sorted(machineRows(run.out)),
            [["node01", "10.1.0.1", "1", "0123456789abcdef"],
             ["node02", "2001:db8::2", "2", "fedcba9876543210"],
             ["plain", "10.1.0.3", "-", "-"]],
        )
        self.assertIn(f"sysmon-hosts: warning: skipped cn=broken,{HOSTS}: ", run.err)
        self.assertIn("'not-hex'", run.err)
        run = sysmonHosts("--directory-config", self.settings, "list")
        self.assertEqual(run.status, 0)
        lines = run.out.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "ADDRESS", "NODE", "MAGIC"])
        self.assertEqual(
            sorted(line.split() for line in lines[1:]),
            [["node01", "10.1.0.1", "1", "0123456789abcdef"],
             ["node02", "2001:db8::2", "2", "fedcba9876543210"],
             ["plain", "10.1.0.3", "-", "-"]],
        )
        # aligned: every column starts where its header does
        starts = [lines[0].index(h) for h in ("ADDRESS", "MAGIC")]
        for line in lines[1:]:
            self.assertEqual([line[s - 2: s] for s in starts], ["  ", "  "], line)
            self.assertNotEqual(line[starts[0]], " ", line)

    def test_check(self) -> None:
        """
        C{check} over C{ldap://} with a password file: exit status 0 and
        the URL, security C{none}, the reader's DN, the base, the hosts
        visible, the entries skipped with why, the round trip.
        """
        self.slapd.addHost("broken", "10.1.0.4", node=4, magic="not-hex")
        run = sysmonHosts("--directory-config", self.settings, "check")
        self.assertEqual((run.status, run.err), (0, ""))
        fields = reportLines(run.out)
        self.assertEqual(
            {k: fields[k] for k in ("url", "security", "bound as", "base", "hosts", "skipped")},
            {"url": self.slapd.url, "security": "none", "bound as": READER, "base": HOSTS,
             "hosts": "3", "skipped": "1"},
        )
        self.assertIn(f"\n  cn=broken,{HOSTS}: ", run.out)
        seconds, unit = fields["round trip"].split()
        self.assertEqual(unit, "s")
        self.assertTrue(0 < float(seconds) < run.seconds, (seconds, run.seconds))

    def test_checkLDAPS(self) -> None:
        """
        C{check} over C{ldaps://} trusting the test CA: security C{ldaps}.
        """
        settings = writeSettings(self, self.slapd, url=self.slapd.ldapsURL,
                                 ca_file=self.slapd.caFile)
        run = sysmonHosts("--directory-config", settings, "check")
        self.assertEqual((run.status, run.err), (0, ""))
        fields = reportLines(run.out)
        self.assertEqual(
            (fields["url"], fields["security"], fields["hosts"]),
            (self.slapd.ldapsURL, f"ldaps (CA file {self.slapd.caFile})", "3"),
        )

    def test_checkStartTLS(self) -> None:
        """
        C{check} over C{ldap://} with StartTLS trusting the test CA:
        security C{StartTLS}.
        """
        settings = writeSettings(self, self.slapd, starttls="yes", ca_file=self.slapd.caFile)
        run = sysmonHosts("--directory-config", settings, "check")
        self.assertEqual((run.status, run.err), (0, ""))
        fields = reportLines(run.out)
        self.assertEqual(
            (fields["url"], fields["security"], fields["hosts"]),
            (self.slapd.url, f"StartTLS (CA file {self.slapd.caFile})", "3"),
        )

    def test_checkUntrusted(self) -> None:
        """
        C{ldaps://} and StartTLS with a CA that did not sign slapd's
        certificate: exit status 1, one line saying the certificate is not
        trusted.
        """
        other = makeTestCA(os.path.abspath(self.mktemp()), name="some other CA")
        for keys in ({"url": self.slapd.ldapsURL}, {"starttls": "yes"}):
            settings = writeSettings(self, self.slapd, ca_file=other.caCert, **keys)
            run = sysmonHosts("--directory-config", settings, "check")
            self.assertEqual((run.status, run.out), (1, ""), keys)
            self.assertTrue(run.err.startswith("sysmon-hosts: "), run.err)
            self.assertIn("not trusted", run.err)
            self.assertEqual(run.err.count("\n"), 1, run.err)

    def test_checkWrongPassword(self) -> None:
        """
        A wrong password: exit status 1 and one line naming invalid
        credentials and the DN.
        """
        settings = writeSettings(
            self, self.slapd, password_file=self.slapd.passwordFile("not-the-password")
        )
        run = sysmonHosts("--directory-config", settings, "check")
        self.assertEqual((run.status, run.out), (1, ""))
        self.assertTrue(run.err.startswith("sysmon-hosts: "), run.err)
        self.assertIn("invalid credentials", run.err)
        self.assertIn(READER, run.err)
        self.assertEqual(run.err.count("\n"), 1, run.err)

    def test_checkNoSuchBase(self) -> None:
        """
        A base DN that does not exist: exit status 1, one line naming it.
        """
        base = f"ou=nowhere,{SUFFIX}"
        settings = writeSettings(self, self.slapd, base=base)
        run = sysmonHosts("--directory-config", settings, "check")
        self.assertEqual((run.status, run.out), (1, ""))
        self.assertTrue(run.err.startswith("sysmon-hosts: "), run.err)
        self.assertIn(base, run.err)
        self.assertIn("does not exist", run.err)

    def test_checkAnonymous(self) -> None:
        """
        An anonymous bind from which the server hides the base: exit status
        1, the server's answer naming the base, and a note on what to set.
        """
        settings = writeSettings(self, self.slapd, bind_dn=None, password_file=None)
        for command in (["check"], ["list"], ["lookup", "node01"]):
            run = sysmonHosts("--directory-config", settings, *command)
            self.assertEqual((run.status, run.out), (1, ""), command)
            first, note = twoLines(self, run.err)
            self.assertTrue(first.startswith("sysmon-hosts: "), first)
            self.assertIn(HOSTS, first)
            self.assertEqual(note, ANONYMOUS_NOTE)

    def test_checkSeesNothing(self) -> None:
        """
        A search that works but finds no hosts is not an error (exit status
        0, "hosts: 0"), but C{check} warns that the DN sees nothing with
        the filter; C{list --machine} prints nothing.
        """
        settings = writeSettings(self, self.slapd, filter="(cn=nothing-here)")
        run = sysmonHosts("--directory-config", settings, "check")
        self.assertEqual(run.status, 0)
        self.assertEqual(reportLines(run.out)["hosts"], "0")
        self.assertEqual(
            run.err,
            f"sysmon-hosts: warning: {READER} sees no hosts under {HOSTS} with "
            "(cn=nothing-here): check base, filter and its read access\n",
        )
        run = sysmonHosts("--directory-config", settings, "list", "--machine")
        self.assertEqual((run.status, run.out, run.err), (0, "", ""))

    def test_settingsError(self) -> None:
        """
        A bad line in the settings file: exit status 1, file:line.
        """
        settings = writeSettings(self, self.slapd, timeout="soon")
        run = sysmonHosts("--directory-config", settings, "list")
        self.assertEqual((run.status, run.out), (1, ""))
        self.assertTrue(run.err.startswith(f"sysmon-hosts: {settings}:5: "), run.err)
        self.assertEqual(run.err.count("\n"), 1, run.err)

    def test_serverDown(self) -> None:
        """
        slapd stopped: C{check}, C{lookup} and C{list} exit 1 with one line
        saying the server is unreachable, at once (well within the timeout).
        """
        baseline = sysmonHosts("--directory-config", self.settings, "check")
        self.assertEqual(baseline.status, 0)
        self.slapd.stop()
        for command in (["check"], ["lookup", "node01"], ["list"]):
            run = sysmonHosts("--directory-config", self.settings, *command)
            self.assertEqual((run.status, run.out), (1, ""), command)
            self.assertTrue(run.err.startswith("sysmon-hosts: "), run.err)
            self.assertIn("unreachable", run.err)
            self.assertEqual(run.err.count("\n"), 1, run.err)
            self.assertLess(run.seconds, baseline.seconds + TIMEOUT, command)

    def test_serverHung(self) -> None:
        """
        slapd stopped with SIGSTOP (it accepts connections but answers
        nothing): C{check} gives up after the settings' timeout, exit
        status 1 with one line saying so -- measured: it takes no longer
        than a working check plus the timeout and a second's margin.
        """
        baseline = sysmonHosts("--directory-config", self.settings, "check")
        self.assertEqual(baseline.status, 0)
        self.slapd.pause()
        self.addCleanup(self.slapd.resume)
        run = sysmonHosts("--directory-config", self.settings, "check")
        self.assertEqual((run.status, run.out), (1, ""))
        self.assertTrue(run.err.startswith("sysmon-hosts: "), run.err)
        self.assertIn(f"did not answer within {TIMEOUT:g}s", run.err)
        self.assertEqual(run.err.count("\n"), 1, run.err)
        self.assertGreater(run.seconds, TIMEOUT * 0.9)
        self.assertLess(run.seconds, baseline.seconds + TIMEOUT + 1.0)
