"""
Tests for L{sysmon.keepalive.cli}, the C{spawndaemon} command: every form
parsed, every refusal and usage error with its exit status, every form sent
as a real C{spawndaemon} process (C{python -m sysmon.keepalive.cli})
through a real control socket to a L{ControlServer} whose supervisor
records the calls, and the listings of a table written by the test, the
machine listing parsed back field by field.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import sys
import time
from typing import Any

from twisted.internet import defer, protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sysmon.keepalive import cli, control
from sysmon.keepalive.config import ProcessConfig
from sysmon.keepalive.errors import BadConfig, NoSuchProcess, NotRegistered, Refused
from sysmon.keepalive.policy import Policy, State
from sysmon.keepalive.table import Record, Table
from tests.keepalive.test_control import RecordingSupervisor, shortDirectory, theReactor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REFUSAL = (
    "belongs to a single-system-image cluster; sysmon keepalive supervises this host only"
)


def runMain(argv: list[str]) -> tuple[int, str, str]:
    """
    Run L{cli.main} in this process (only for what needs no reactor).

    @return: the exit status, stdout and stderr.
    """
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(argv, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


class ParseTests(SynchronousTestCase):
    """
    Every form of the command line gives the request it means.
    """

    def test_forms(self) -> None:
        """
        Each form, with options in any order, clustered or not, values
        attached or separate, parses to its L{cli.Request}; relative paths
        become absolute; C{-d} takes everything after its path as the
        program's arguments, options included.
        """
        here = os.path.abspath
        common = dict(
            control=cli.DEFAULT_CONTROL, table=cli.DEFAULT_TABLE,
            scriptDir=cli.DEFAULT_SCRIPT_DIR,
        )
        cases: list[tuple[list[str], dict[str, Any]]] = [
            (["-r", "a.cfg"], dict(action="register", option="r", config=here("a.cfg"))),
            (["-n", "5", "-a", "-c", "down=3", "-c", "reject=0", "-r", "/x.cfg"],
             dict(action="register", option="r", config="/x.cfg", errorLimit=5,
                  matchArgs=True, downCode=3, rejectCode=0)),
            (["-n5", "-ac", "reject=255", "-r/x.cfg"],
             dict(action="register", option="r", config="/x.cfg", errorLimit=5,
                  matchArgs=True, rejectCode=255)),
            (["-r", "/x.cfg", "-n", "1"],
             dict(action="register", option="r", config="/x.cfg", errorLimit=1)),
            (["-a", "-R", "/x.cfg", "123"],
             dict(action="adopt", option="R", config="/x.cfg", pid=123, matchArgs=True)),
            (["-R", "rel/x.cfg", "9", "-a"],
             dict(action="adopt", option="R", config=here("rel/x.cfg"), pid=9,
                  matchArgs=True)),
            (["-k", "-a", "-d", "/usr/bin/foo", "-f", "--port", "8080", "-F", "-k", ""],
             dict(action="unregister", option="d", path="/usr/bin/foo",
                  args=("-f", "--port", "8080", "-F", "-k", ""), kill=True, matchArgs=True)),
            (["-d", "foo"], dict(action="unregister", option="d", path="foo", args=())),
            (["-kad/bin/x", "y"],
             dict(action="unregister", option="d", path="/bin/x", args=("y",), kill=True,
                  matchArgs=True)),
            (["-p", "77"], dict(action="unregister", option="p", pid=77)),
            (["-kp77"], dict(action="unregister", option="p", pid=77, kill=True)),
            (["-g", "web"], dict(action="unregister", option="g", group="web")),
            (["-k", "-g", "web"], dict(action="unregister", option="g", group="web", kill=True)),
            (["-s", "3"], dict(action="unregister", option="s", slot=3)),
            (["-s3", "-k"], dict(action="unregister", option="s", slot=3, kill=True)),
            (["-L"], dict(action="list", option="L")),
            (["-L", "-v", "human"], dict(action="list", option="L")),
            (["-L", "-v", "machine"], dict(action="list", option="L", verbosity="machine")),
            (["-L", "-v", "machine", "keepalive"],
             dict(action="list", option="L", verbosity="machine", sections=("keepalive",))),
            (["-Lv", "human", "processes"],
             dict(action="list", option="L", sections=("processes",))),
            (["-vmachine", "processes", "-L"],
             dict(action="list", option="L", verbosity="machine", sections=("processes",))),
            (["-Q"], dict(action="quit", option="Q")),
            (["-q"], dict(action="query", option="q")),
            (["-h"], dict(action="help")),
            (["--help"], dict(action="help")),
            (["-r", "x.cfg", "-h"], dict(action="help")),
            (["--control", "c", "--table=t", "--script-dir", "s", "-q"],
             dict(action="query", option="q", control=here("c"), table=here("t"),
                  scriptDir=here("s"))),
        ]
        for argv, fields in cases:
            expected = cli.Request(**{**common, **fields})
            self.assertEqual(cli.parse(argv), expected, argv)


class UsageErrorTests(SynchronousTestCase):
    """
    A command line that is not a spawndaemon form exits 2 with the reason
    and the usage, and asks nothing of keepalive.
    """

    def test_usageErrors(self) -> None:
        """
        Each malformed command line gives its own message, the usage and
        exit status 2.
        """
        cases = [
            ([], "no command: give one of -r -R -d -p -g -s -L -Q -q"),
            (["-r"], "-r needs a config file"),
            (["-R", "x.cfg"], "-R needs a config file and a pid"),
            (["-R", "x.cfg", "abc"], "-R's pid takes a positive integer, not 'abc'"),
            (["-p", "0"], "-p takes a positive integer, not '0'"),
            (["-p", " 7"], "-p takes a positive integer, not ' 7'"),
            (["-s", "-1"], "-s takes a positive integer, not '-1'"),
            (["-s"], "-s needs a slot number"),
            (["-g", ""], "-g needs a group name"),
            (["-d"], "-d needs a program's path"),
            (["-n", "0", "-r", "x"], "-n takes a positive integer, not '0'"),
            (["-n", "ten", "-r", "x"], "-n takes a positive integer, not 'ten'"),
            (["-n", "1", "-n", "2", "-r", "x"], "-n given twice"),
            (["-c", "down=256", "-r", "x"], "-c down= takes an integer from 0 to 255, not '256'"),
            (["-c", "reject=", "-r", "x"], "-c reject= takes an integer from 0 to 255, not ''"),
            (["-c", "up=3", "-r", "x"], "-c takes down=CODE or reject=CODE, not 'up=3'"),
            (["-c", "down", "-r", "x"], "-c takes down=CODE or reject=CODE, not 'down'"),
            (["-c", "down=1", "-c", "down=2", "-r", "x"], "-c down= given twice"),
            (["-r", "x", "-R", "y", "1"],
             "-R cannot go with -r: give one of -r -R -d -p -g -s -L -Q -q"),
            (["-L", "-q"], "-q cannot go with -L: give one of -r -R -d -p -g -s -L -Q -q"),
            (["-r", "x", "-r", "y"], "-r given twice"),
            (["-n", "3", "-R", "x", "1"], "-n goes only with -r"),
            (["-c", "down=1", "-p", "1"], "-c goes only with -r"),
            (["-a", "-p", "1"], "-a goes only with -r, -R or -d"),
            (["-a", "-L"], "-a goes only with -r, -R or -d"),
            (["-k", "-r", "x"], "-k goes only with -d, -p, -g or -s"),
            (["-k", "-Q"],
             "-k goes only with -d, -p, -g or -s (-Q itself stops the processes "
             "keepalive started)"),
            (["-v", "human", "-Q"], "-v goes only with -L"),
            (["-v", "loud", "-L"], "-v takes human or machine, not 'loud'"),
            (["-L", "-v"], "-v needs human or machine"),
            (["-L", "-v", "human", "-v", "machine"], "-v given twice"),
            (["-L", "processes"], "unexpected argument 'processes'"),
            (["-q", "-"], "unexpected argument '-'"),
            (["-R", "x", "1", "2"], "unexpected argument '2'"),
            (["-y"], "unknown option -y"),
            (["-ky", "-p", "1"], "unknown option -y"),
            (["--frob", "-q"], "unknown option --frob"),
            (["--help=yes"], "unknown option --help"),
            (["-q", "--control"], "--control needs a path"),
            (["-q", "--table="], "--table needs a path"),
        ]
        for argv, message in cases:
            status, out, err = runMain(argv)
            self.assertEqual(status, 2, argv)
            self.assertEqual(out, "", argv)
            self.assertEqual(
                err,
                f"spawndaemon: {message}\n{cli.USAGE}"
                "Try 'spawndaemon --help' for the forms and exit statuses.\n",
                argv,
            )

    def test_refusedClusterOptions(self) -> None:
        """
        Each cluster option of the Cluster Tools spawndaemon is refused with
        a message of its own (no usage) and exit status 2, wherever it is
        on the line and even inside a cluster of options.
        """
        messages = {
            "i": f"-i: cluster-wide or node-list placement {REFUSAL}",
            "F": f"-F: cluster node placement {REFUSAL}",
            "B": f"-B: backup node placement {REFUSAL}",
            "Z": f"-Z: choosing the node to restart on {REFUSAL}",
            "U": f"-U: cluster-wide placement {REFUSAL}",
            "P": f"-P: addressing a process on a cluster node {REFUSAL}",
            "S": f"-S: addressing a slot on a cluster node {REFUSAL}",
            "D": f"-D: addressing a program on a cluster node {REFUSAL}",
            "x": f"-x: cluster operations on one entry {REFUSAL}",
            "X": f"-X: a Cluster Tools option that {REFUSAL}",
            "o": f"-o: a Cluster Tools option that {REFUSAL}",
            "z": "-z: sizing the table belongs to the cluster's fixed-size memory-mapped "
                 "table; sysmon keepalive's table grows as needed",
        }
        for letter, message in messages.items():
            for argv in (
                [f"-{letter}", "node1", "-r", "x.cfg"],
                ["-r", "x.cfg", f"-{letter}"],
                [f"-a{letter}", "node1", "-r", "x.cfg"],
            ):
                self.assertEqual(runMain(argv), (2, "", f"spawndaemon: {message}\n"), argv)
        self.assertEqual(
            messages["F"],
            "-F: cluster node placement belongs to a single-system-image cluster; "
            "sysmon keepalive supervises this host only",
        )

    def test_help(self) -> None:
        """
        C{--help} exits 0 and explains every form and option, the machine
        listing's fields in order, and the exit statuses.
        """
        status, out, err = runMain(["--help"])
        self.assertEqual((status, err), (0, ""))
        for option in ("-r", "-R", "-n", "-a", "-c down=", "-c reject=", "-d", "-p",
                       "-g", "-s", "-k", "-L", "-v human", "-v machine", "-Q", "-q",
                       "--control", "--table", "--script-dir"):
            self.assertIn(f"  {option}", out)
        self.assertIn(
            "  keepalive  running(yes/no/unknown)  pid  since  table  control  processes",
            out,
        )
        self.assertIn(
            "  process  slot  state  pid  child(0/1)  started  restarts  failures\n"
            "           group  critical(0/1)  last-exit  log-path  config  path\n"
            "           args(shlex.join)",
            out,
        )
        self.assertIn("Exit status:\n  0  done", out)
        self.assertIn("\n  1  keepalive refused", out)
        self.assertIn("\n  2  usage error, or a cluster option", out)


class FormatTests(SynchronousTestCase):
    """
    Durations in the human listing.
    """

    def test_uptime(self) -> None:
        """
        Uptimes are shown in their two largest units, the second padded.
        """
        cases = [
            (0, "0s"), (42.9, "42s"), (60, "1m00s"), (4 * 60 + 7, "4m07s"),
            (3600, "1h00m"), (2 * 3600 + 5 * 60 + 59, "2h05m"),
            (86400, "1d00h"), (3 * 86400 + 4 * 3600 + 59 * 60, "3d04h"),
            (400 * 86400, "400d00h"), (-5, "0s"),
        ]
        for seconds, text in cases:
            self.assertEqual(cli.formatUptime(seconds), text, seconds)


def unescape(field: str) -> str:
    """
    The value of one machine-listing field, read by the rules of
    C{--help} (written here independently of the code under test).
    """
    if field == "-":
        return ""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\":
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "-": "-"}[field[i + 1]])
            i += 2
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def machineRecords(text: str) -> list[list[str]]:
    """
    The records of a machine listing, fields unescaped.
    """
    assert text.endswith("\n") or text == "", repr(text)
    return [[unescape(f) for f in line.split("\t")] for line in text.splitlines()]


class TableMixin:
    """
    Writes a table with records that exercise the listing: a running
    critical group member with failures old and new, a down process whose
    path and arguments hold tabs, newlines, backslashes and a lone C{-},
    and a long command line.
    """

    def writeTable(self, case: Any) -> tuple[str, list[Record]]:
        path = os.path.join(os.path.abspath(case.mktemp()), "keepalive.data")
        now = time.time()
        self.now = now
        records = [
            Record(
                slot=1,
                config=ProcessConfig(
                    "/usr/sbin/nginx", ("-g", "daemon off;"),
                    policy=Policy(probation=300.0), source="/etc/keepalive.d/nginx.cfg",
                ),
                group="web", critical=True, state=State.OK, pid=1234, child=True,
                started=now - (3 * 86400 + 4 * 3600 + 1800), restarts=2,
                failures=(now - 10, now - 100, now - 1000),
                logPath="/var/log/keepalive/nginx.1234",
            ),
            Record(
                slot=2,
                config=ProcessConfig(
                    "/opt/odd\tdir/prog", ("a\tb", "line\nbreak", "-", "\\", "", "cr\r"),
                    source="/etc/keepalive.d/odd.cfg",
                ),
                state=State.DOWN, pid=0, started=now - 50, restarts=10,
                failures=(now - 5,), lastExit="exited with status 3",
            ),
            Record(
                slot=5,
                config=ProcessConfig("/bin/sleep", ("1000",) * 40, source="/etc/s.cfg"),
                group="-", state=State.OK, pid=99, started=now - 250,
            ),
        ]
        table = Table(path)
        for record in records:
            table.save(record)
        table.close()
        return path, records

    def checkProcessRecords(self, fields: list[list[str]], records: list[Record]) -> None:
        """
        The C{process} records of a machine listing are C{records}, field
        by field, in the documented order.
        """
        self.assertEqual(len(fields), len(records))
        for got, record in zip(fields, records):
            self.assertEqual(len(got), 15, got)
            expected = [
                "process",
                str(record.slot),
                record.state.value,
                str(record.pid) if record.pid else "",
                "1" if record.child else "0",
                f"{record.started:.3f}",
                str(record.restarts),
                str(sum(1 for t in record.failures if self.now - t < 300)),
                record.group or "",
                "1" if record.critical else "0",
                record.lastExit,
                record.logPath or "",
                record.config.source,
                record.config.path,
                got[14],
            ]
            self.assertEqual(got, expected)
            self.assertEqual(tuple(shlex.split(got[14])), record.config.args)


class LocalListingTests(TableMixin, SynchronousTestCase):
    """
    C{-L} for the processes alone reads the table and needs no keepalive
    (run in this process).
    """

    def test_machineProcesses(self) -> None:
        """
        C{-L -v machine processes} prints one C{process} record per table
        entry, by slot, every field as documented; escaped tabs, newlines,
        carriage returns, backslashes and a lone C{-} come back exactly.
        """
        path, records = self.writeTable(self)
        status, out, err = runMain(["-L", "-v", "machine", "processes", "--table", path])
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.count("\n"), 3)
        self.checkProcessRecords(machineRecords(out), records)
        self.assertIn("\t/opt/odd\\tdir/prog\t", out)
        self.assertEqual(out.splitlines()[2].split("\t")[8], "\\-")

    def test_humanProcesses(self) -> None:
        """
        C{-L -v human processes} prints aligned columns under a header:
        uptime for running processes, failures within probation, C{*} for
        a critical member, the command line quoted with control characters
        shown as escapes; nothing is cut when the output is not a
        terminal.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "COLUMNS"})
        path, records = self.writeTable(self)
        status, out, err = runMain(["-L", "-v", "human", "processes", "--table", path])
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(len(lines), 4)
        header = lines[0]
        self.assertEqual(
            header.split(),
            ["SLOT", "STATE", "PID", "UPTIME", "RESTARTS", "FAILURES", "GROUP", "COMMAND"],
        )
        command = header.index("COMMAND")
        rows = [
            (line[:command].split(), line[command:]) for line in lines[1:]
        ]
        self.assertEqual(
            rows[0],
            (["1", "ok", "1234", "3d04h", "2", "2", "web*"],
             "/usr/sbin/nginx -g 'daemon off;'"),
        )
        self.assertEqual(
            rows[1],
            (["2", "down", "-", "-", "10", "1", "-"],
             "'/opt/odd\\tdir/prog' 'a\\tb' 'line\\nbreak' - '\\' '' 'cr\\r'"),
        )
        self.assertEqual(rows[2], (["5", "ok", "99", "4m10s", "0", "0", "-"],
                                   "/bin/sleep" + " 1000" * 40))
        # Right-aligned numbers end under their heading.
        for name in ("SLOT", "PID", "RESTARTS", "FAILURES"):
            end = header.index(name) + len(name)
            for line in lines[1:]:
                self.assertNotEqual(line[end - 1], " ", (name, line))
                self.assertEqual(line[end], " ", (name, line))
        for name in ("STATE", "UPTIME", "GROUP"):
            start = header.index(name)
            for line in lines[1:]:
                self.assertEqual(line[start - 1], " ", (name, line))
                self.assertNotEqual(line[start], " ", (name, line))

    def test_humanCut(self) -> None:
        """
        With C{COLUMNS} set, a command line that does not fit is cut with
        an ellipsis so each line fits; shorter ones are whole.
        """
        path, records = self.writeTable(self)
        self.patch(os, "environ", dict(os.environ, COLUMNS="90"))
        status, out, err = runMain(["-L", "-v", "human", "processes", "--table", path])
        lines = out.splitlines()
        self.assertTrue(lines[1].endswith("/usr/sbin/nginx -g 'daemon off;'"))
        self.assertTrue(lines[3].endswith("\N{HORIZONTAL ELLIPSIS}"), lines[3])
        self.assertIn("/bin/sleep 1000 1000", lines[3])
        for line in lines:
            self.assertLessEqual(len(line), 90, line)

    def test_emptyTable(self) -> None:
        """
        An empty table: the human listing says so, the machine listing has
        no records.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "keepalive.data")
        Table(path).close()
        self.assertEqual(
            runMain(["-L", "-v", "human", "processes", "--table", path]),
            (0, "no processes in the table\n", ""),
        )
        self.assertEqual(
            runMain(["-L", "-v", "machine", "processes", "--table", path]), (0, "", "")
        )

    def test_noTable(self) -> None:
        """
        C{-L} without a table file exits 1 saying there is none.
        """
        path = os.path.abspath(os.path.join(self.mktemp(), "keepalive.data"))
        for argv in (["-L"], ["-L", "-v", "machine", "processes"]):
            self.assertEqual(
                runMain(argv + ["--table", path]),
                (1, "", f"spawndaemon: no table at {path} (keepalive has never run "
                        "with it)\n"),
            )

    def test_notATable(self) -> None:
        """
        C{-L} on a file that is not a table exits 1 with the table's error.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("not sqlite")
        status, out, err = runMain(["-L", "-v", "machine", "processes", "--table", path])
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith(f"spawndaemon: table {path}: "), err)


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done: defer.Deferred[tuple[int, str, str]] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Any) -> None:
        code = reason.value.exitCode
        self.done.callback(
            (code, b"".join(self.out).decode(), b"".join(self.err).decode())
        )


class Spawndaemon(TestCase):
    """
    Runs C{spawndaemon} as a process (the checkout's code) without blocking
    the reactor that serves its control socket.
    """

    def setUp(self) -> None:
        self.work = shortDirectory(self)
        self.control = os.path.join(self.work, "control")

    def spawndaemon(
        self, *argv: str, cwd: str | None = None, wrapper: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> defer.Deferred[tuple[int, str, str]]:
        """
        Run C{spawndaemon --control <the test's socket> ARGV}.

        @param wrapper: a command line that runs it (C{setpriv ... --}).
        @return: a Deferred firing with the exit status, stdout and stderr.
        """
        environ = {
            "PYTHONPATH": ROOT,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
        }
        environ.update(env or {})
        proto = _Collect()
        command = [
            *wrapper, sys.executable, "-m", "sysmon.keepalive.cli", "--control",
            self.control, *argv,
        ]
        theReactor().spawnProcess(
            proto, command[0], command, env=environ, path=cwd or self.work
        )
        return proto.done

    def writeFile(self, name: str, text: str) -> str:
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        return path


class RemoteFormTests(Spawndaemon):
    """
    Each form that talks to keepalive, through a real socket to a
    L{control.ControlServer} whose supervisor records what it is asked.
    """

    def setUp(self) -> None:
        super().setUp()
        self.supervisor = RecordingSupervisor()
        self.server = control.ControlServer(self.supervisor, self.control, theReactor())
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(lambda: self.server.running and self.server.stopService())
        self.config = self.writeFile("sleep.cfg", "command = /bin/sleep\nargs = 1000\n")

    async def test_register(self) -> None:
        """
        C{-r} with a relative config path sends its absolute path and the
        options; the slot is printed.
        """
        result = await self.spawndaemon(
            "-n", "4", "-a", "-c", "down=3", "-c", "reject=7", "-r", "sleep.cfg"
        )
        self.assertEqual(result, (0, f"registered {self.config}: slot 3\n", ""))
        self.assertEqual(
            self.supervisor.calls,
            [("register", (self.config,),
              dict(errorLimit=4, matchArgs=True, downCode=3, rejectCode=7))],
        )

    async def test_registerPlain(self) -> None:
        """
        C{-r} alone sends no error limit and no codes.
        """
        result = await self.spawndaemon("-r", self.config)
        self.assertEqual(result[0], 0)
        self.assertEqual(
            self.supervisor.calls,
            [("register", (self.config,),
              dict(errorLimit=None, matchArgs=False, downCode=None, rejectCode=None))],
        )

    async def test_registerGroup(self) -> None:
        """
        C{-r} with a group file registers it and prints the group's slots.
        """
        self.writeFile("other.cfg", "command = /bin/sleep\nargs = 2000\n")
        group = self.writeFile(
            "web.group", "group = web\nmember = sleep.cfg\ncritical = other.cfg\n"
        )
        self.supervisor.answers["register"] = [4, 5]
        result = await self.spawndaemon("-r", group)
        self.assertEqual(result, (0, f"registered group web ({group}): slots 4, 5\n", ""))
        self.assertEqual(self.supervisor.calls[0][1], (group,))

    async def test_badConfig(self) -> None:
        """
        A bad config file is reported with file:line and exit 1 before
        keepalive is asked anything.
        """
        bad = self.writeFile("bad.cfg", "command = /bin/sleep\nbogus = 1\n")
        for argv in (["-r", bad], ["-R", bad, "1"]):
            status, out, err = await self.spawndaemon(*argv)
            self.assertEqual((status, out), (1, ""))
            self.assertTrue(err.startswith(f"spawndaemon: {bad}:2: "), err)
            self.assertEqual(err.count("\n"), 1, err)
        self.assertEqual(self.supervisor.calls, [])

    async def test_adopt(self) -> None:
        """
        C{-a -R CFG PID} sends the config's absolute path, the pid and
        C{matchArgs}; the slot is printed.
        """
        result = await self.spawndaemon("-a", "-R", "sleep.cfg", "4242")
        self.assertEqual(result, (0, f"adopted pid 4242 in slot 4: {self.config}\n", ""))
        self.assertEqual(
            self.supervisor.calls, [("adopt", (self.config, 4242), dict(matchArgs=True))]
        )

    async def test_adoptGroup(self) -> None:
        """
        C{-R} with a group file is refused (exit 1) without asking
        keepalive.
        """
        group = self.writeFile("web.group", "group = web\nmember = sleep.cfg\n")
        result = await self.spawndaemon("-R", group, "12")
        self.assertEqual(
            result,
            (1, "", f"spawndaemon: -R takes a process config file; {group} is a group "
                    "file\n"),
        )
        self.assertEqual(self.supervisor.calls, [])

    async def test_unregisterByPath(self) -> None:
        """
        C{-k -a -d PATH ARGS...} sends the path and the arguments exactly
        (spaces, option-like words, an empty one), C{kill} and
        C{matchArgs}; the slots are printed.
        """
        result = await self.spawndaemon(
            "-k", "-a", "-d", "/bin/sleep", "1000", "a b", "-F", ""
        )
        self.assertEqual(result, (0, "unregistered and stopped slots 5, 6\n", ""))
        self.assertEqual(
            self.supervisor.calls,
            [("unregister", (),
              dict(path="/bin/sleep", args=("1000", "a b", "-F", ""), pid=None,
                   group=None, slot=None, kill=True, matchArgs=True))],
        )

    async def test_unregisterBareName(self) -> None:
        """
        C{-d NAME} looks NAME up in C{PATH}; with no arguments it sends an
        empty argument list.
        """
        result = await self.spawndaemon("-d", "sleep")
        self.assertEqual(result, (0, "unregistered slots 5, 6\n", ""))
        self.assertEqual(
            self.supervisor.calls[0][2]["path"], os.path.abspath(shutil.which("sleep"))
        )
        self.assertEqual(self.supervisor.calls[0][2]["args"], ())

    async def test_unregisterUnknownName(self) -> None:
        """
        C{-d NAME} for a name not in C{PATH} exits 1 saying so.
        """
        status, out, err = await self.spawndaemon("-d", "no-such-program-here")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err,
            "spawndaemon: -d no-such-program-here: no such program in PATH; give the "
            "full pathname as spawndaemon -L shows it\n",
        )

    async def test_unregisterOthers(self) -> None:
        """
        C{-p}, C{-g} and C{-s} (with and without C{-k}) send their one
        selector.
        """
        self.supervisor.answers["unregister"] = [8]
        forms = [
            (["-p", "77"], dict(pid=77, kill=False), "unregistered slot 8\n"),
            (["-k", "-g", "web"], dict(group="web", kill=True),
             "unregistered and stopped slot 8\n"),
            (["-s", "3"], dict(slot=3, kill=False), "unregistered slot 8\n"),
        ]
        for argv, selector, output in forms:
            result = await self.spawndaemon(*argv)
            self.assertEqual(result, (0, output, ""))
        expected = []
        for argv, selector, output in forms:
            call = dict(path=None, args=None, pid=None, group=None, slot=None,
                        matchArgs=False)
            call.update(selector)
            expected.append(("unregister", (), call))
        self.assertEqual(self.supervisor.calls, expected)

    async def test_keepaliveErrors(self) -> None:
        """
        keepalive's refusals are printed as C{spawndaemon: <message>} with
        exit 1.
        """
        cases = [
            ("unregister", NotRegistered("no process in slot 9"), ["-s", "9"]),
            ("adopt", NoSuchProcess("pid 4242 is not /bin/sleep"), ["-R", "sleep.cfg", "4242"]),
            ("register", Refused("restart script /x is group-writable"), ["-r", "sleep.cfg"]),
            ("register", BadConfig("/x.cfg:3: bad"), ["-r", "sleep.cfg"]),
        ]
        for method, error, argv in cases:
            self.supervisor.answers[method] = error
            result = await self.spawndaemon(*argv)
            self.assertEqual(result, (1, "", f"spawndaemon: {error}\n"))

    async def test_quit(self) -> None:
        """
        C{-Q} asks keepalive to quit, prints the slots it stopped, and
        keepalive is then terminated.
        """
        result = await self.spawndaemon("-Q")
        self.assertEqual(
            result, (0, "keepalive is stopping; it stopped the processes in slots 1, 2\n", "")
        )
        await self.supervisor.terminated
        self.assertEqual([c[0] for c in self.supervisor.calls], ["quit", "terminate"])

    async def test_quitNothing(self) -> None:
        """
        C{-Q} when keepalive started no processes says so.
        """
        self.supervisor.answers["quit"] = []
        result = await self.spawndaemon("-Q")
        self.assertEqual(
            result, (0, "keepalive is stopping; it had no processes of its own to stop\n", "")
        )

    async def test_query(self) -> None:
        """
        C{-q} exits 0, silently, when keepalive answers.
        """
        self.assertEqual(await self.spawndaemon("-q"), (0, "", ""))
        self.assertEqual(self.supervisor.calls, [("info", (), {})])

    async def test_permissionDenied(self) -> None:
        """
        A user who may not use the socket (mode 0600, someone else's) is
        told so: C{-Q} exits 1 naming the socket, C{-q} exits 1 silently.
        (The socket is given to nobody and spawndaemon runs as root
        without the capabilities that bypass file permissions: the
        kernel's EACCES, with an interpreter the test can run.)
        """
        setpriv = shutil.which("setpriv")
        if os.getuid() != 0 or setpriv is None:
            raise self.skipTest("needs root and setpriv (util-linux)")
        os.chown(self.control, 65534, 65534)
        wrapper = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")
        status, out, err = await self.spawndaemon("-Q", wrapper=wrapper)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err,
            f"spawndaemon: cannot reach keepalive (permission denied on {self.control}; "
            "run spawndaemon as root)\n",
        )
        self.assertEqual(await self.spawndaemon("-q", wrapper=wrapper), (1, "", ""))
        self.assertEqual(self.supervisor.calls, [])


class NotRunningTests(Spawndaemon):
    """
    Without keepalive every form that needs it exits 1 saying so.
    """

    async def test_everyForm(self) -> None:
        """
        C{-r}, C{-R}, C{-d}, C{-p}, C{-g}, C{-s} and C{-Q} print that
        keepalive is not running (no socket) and exit 1; C{-q} exits 1
        silently.
        """
        self.writeFile("sleep.cfg", "command = /bin/sleep\n")
        message = f"spawndaemon: keepalive is not running (no control socket at {self.control})\n"
        for argv in (["-r", "sleep.cfg"], ["-R", "sleep.cfg", "1"], ["-d", "/bin/sleep"],
                     ["-p", "1"], ["-g", "web"], ["-s", "1"], ["-Q"]):
            self.assertEqual(await self.spawndaemon(*argv), (1, "", message), argv)
        self.assertEqual(await self.spawndaemon("-q"), (1, "", ""))

    async def test_staleSocket(self) -> None:
        """
        A socket left by a dead keepalive: the connection is refused, and
        the message says so.
        """
        import socket

        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.control)
        stale.close()
        self.assertEqual(
            await self.spawndaemon("-Q"),
            (1, "", f"spawndaemon: keepalive is not running (connection refused at "
                    f"{self.control})\n"),
        )


class RemoteListingTests(TableMixin, Spawndaemon):
    """
    C{-L} with keepalive's section, run as a process, with and without a
    keepalive answering.
    """

    def setUp(self) -> None:
        super().setUp()
        self.table, self.records = self.writeTable(self)
        self.supervisor = RecordingSupervisor()
        self.supervisor.answers["info"] = dict(
            pid=4242, started=1700000000.25, table=self.table, control=self.control,
            processes=3,
        )

    def startKeepalive(self) -> None:
        server = control.ControlServer(self.supervisor, self.control, theReactor())
        server.privilegedStartService()
        server.startService()
        self.addCleanup(lambda: server.running and server.stopService())

    async def test_machineRunning(self) -> None:
        """
        C{-L -v machine} with keepalive running: the C{keepalive} record
        from its answer, then the process records.
        """
        self.startKeepalive()
        status, out, err = await self.spawndaemon(
            "-L", "-v", "machine", "--table", self.table
        )
        self.assertEqual((status, err), (0, ""))
        records = machineRecords(out)
        self.assertEqual(
            records[0],
            ["keepalive", "yes", "4242", "1700000000.250", self.table, self.control, "3"],
        )
        self.checkProcessRecords(records[1:], self.records)

    async def test_machineKeepaliveOnly(self) -> None:
        """
        C{-L -v machine keepalive} with no keepalive: one record, running
        C{no}, pid and time empty, the count from the table.
        """
        status, out, err = await self.spawndaemon(
            "-L", "-v", "machine", "keepalive", "--table", self.table
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out, f"keepalive\tno\t-\t-\t{self.table}\t{self.control}\t3\n"
        )

    async def test_humanRunning(self) -> None:
        """
        C{-L} (human, both sections) with keepalive running: its pid, start
        time and uptime, table, socket and process count, a blank line,
        then the process table.
        """
        self.startKeepalive()
        status, out, err = await self.spawndaemon("-L", "--table", self.table)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1700000000.25))
        self.assertTrue(
            lines[0].startswith(f"keepalive: running, pid 4242, since {since} (up "),
            lines[0],
        )
        self.assertEqual(
            lines[1:5],
            [f"table:     {self.table}", f"control:   {self.control}", "processes: 3", ""],
        )
        self.assertEqual(lines[5].split()[:2], ["SLOT", "STATE"])
        self.assertEqual(len(lines), 9)

    async def test_humanNotRunning(self) -> None:
        """
        C{-L} with no keepalive says it is not running and why, and still
        lists the table.
        """
        status, out, err = await self.spawndaemon("-L", "--table", self.table)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(
            lines[:4],
            [f"keepalive: not running (no control socket at {self.control})",
             f"table:     {self.table}", f"control:   {self.control}", "processes: 3"],
        )
        self.assertEqual(len(lines), 9)

    async def test_otherTable(self) -> None:
        """
        When the running keepalive uses another table than the one listed,
        a note on stderr says so.
        """
        self.supervisor.answers["info"]["table"] = "/elsewhere/keepalive.data"
        self.startKeepalive()
        status, out, err = await self.spawndaemon(
            "-L", "-v", "machine", "keepalive", "--table", self.table
        )
        self.assertEqual(status, 0)
        self.assertEqual(
            err,
            "spawndaemon: note: keepalive uses the table /elsewhere/keepalive.data; "
            f"this lists {self.table}\n",
        )
        self.assertEqual(machineRecords(out)[0][4], "/elsewhere/keepalive.data")

    async def test_unreachable(self) -> None:
        """
        When the socket cannot be used (permission denied), C{-L} says
        keepalive's state is C{unknown}, gives the reason on stderr, and
        still lists the table.
        """
        setpriv = shutil.which("setpriv")
        if os.getuid() != 0 or setpriv is None:
            raise self.skipTest("needs root and setpriv (util-linux)")
        self.startKeepalive()
        os.chown(self.control, 65534, 65534)
        wrapper = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")
        status, out, err = await self.spawndaemon(
            "-L", "-v", "machine", "--table", self.table, wrapper=wrapper
        )
        self.assertEqual(status, 0)
        self.assertEqual(
            err,
            f"spawndaemon: cannot reach keepalive (permission denied on {self.control}; "
            "run spawndaemon as root)\n",
        )
        records = machineRecords(out)
        self.assertEqual(
            records[0], ["keepalive", "unknown", "", "", self.table, self.control, "3"]
        )
        self.checkProcessRecords(records[1:], self.records)
        self.assertEqual(self.supervisor.calls, [])
