"""
Tests for L{sysmon.keepalive.config}: process config files and group files,
their errors (each naming file and line), PATH look-up, uid/gid resolution
and the JSON form that crosses the control socket and fills the table.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re

import attrs
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sysmon.keepalive import config
from sysmon.keepalive.config import GroupConfig, ProcessConfig, load
from sysmon.keepalive.errors import BadConfig, KeepaliveError
from sysmon.keepalive.policy import Policy
from sysmon.testing import writeScript

SCRIPTS = "/etc/keepalive.d"


class _Files:
    """
    A temporary directory with an executable program in it.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.program = writeScript(os.path.join(self.dir, "prog"), "exit 0\n")

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def load(self, name: str, text: str, **kw) -> ProcessConfig | GroupConfig:
        kw.setdefault("scriptDir", SCRIPTS)
        return load(self.write(name, text), **kw)

    def refused(self, name: str, text: str, **kw) -> str:
        """
        Load C{text} as file C{name}; it must raise L{BadConfig}.

        @return: the message.
        """
        kw.setdefault("scriptDir", SCRIPTS)
        path = self.write(name, text)
        with self.assertRaises(BadConfig) as caught:
            load(path, **kw)
        return str(caught.exception)

    def assertAt(self, message: str, path: str, line: int) -> None:
        """
        C{message} starts with C{path:line:}.
        """
        self.assertTrue(
            message.startswith(f"{path}:{line}: "), f"{message!r} is not at {path}:{line}"
        )


class ProcessFileTests(_Files, SynchronousTestCase):
    """
    Reading a process config file.
    """

    def test_everyKey(self):
        """
        Every key of a process config file gives its field: the command
        absolute, args split by shell rules, user and group as written, cwd,
        env sorted by name, the restart script in the script directory, the
        four policy numbers, the pid file and the source file.
        """
        os.makedirs(os.path.join(self.dir, "work"))
        path = self.write(
            "my.cfg",
            f"""# my daemon
command = {self.program}
args = -f --port 8080 "two words" 'it''s'
user = daemon
group = nogroup
cwd = {self.dir}/work
env.LANG = C
env.A_FIRST = 1
restart-script = restart-mine
error-limit = 4
probation = 60.5
respawn-time = 0.25
term-wait = 7
pidfile = /run/mine.pid
""",
        )
        loaded = load(path, scriptDir="/srv/scripts")
        self.assertEqual(
            loaded,
            ProcessConfig(
                path=self.program,
                args=("-f", "--port", "8080", "two words", "its"),
                user="daemon",
                group="nogroup",
                cwd=os.path.join(self.dir, "work"),
                env=(("A_FIRST", "1"), ("LANG", "C")),
                restartScript="/srv/scripts/restart-mine",
                policy=Policy(errorLimit=4, probation=60.5, respawnTime=0.25, termWait=7.0),
                pidfile="/run/mine.pid",
                source=path,
            ),
        )

    def test_defaults(self):
        """
        With only C{command}: no args, user, group, cwd, env, restart script
        or pid file, and the policy defaults of the NonStop Clusters manager:
        error limit 10, probation 300 s, respawn time 1 s, term wait 2 s.
        """
        loaded = self.load("min.cfg", f"command = {self.program}\n")
        self.assertEqual(loaded.args, ())
        self.assertIsNone(loaded.user)
        self.assertIsNone(loaded.group)
        self.assertIsNone(loaded.cwd)
        self.assertEqual(loaded.env, ())
        self.assertIsNone(loaded.restartScript)
        self.assertIsNone(loaded.pidfile)
        self.assertEqual(
            (loaded.policy.errorLimit, loaded.policy.probation,
             loaded.policy.respawnTime, loaded.policy.termWait),
            (10, 300.0, 1.0, 2.0),
        )

    def test_argvAndBasename(self):
        """
        C{argv} is the executable then the arguments; C{basename} is the
        executable's file name.
        """
        loaded = self.load("a.cfg", f"command = {self.program}\nargs = one two\n")
        self.assertEqual(loaded.argv, (self.program, "one", "two"))
        self.assertEqual(loaded.basename, "prog")

    def test_bareCommandFromPATH(self):
        """
        A bare command name is looked up in PATH at load time and stored as
        the absolute path of the first match.
        """
        first = os.path.join(self.dir, "first")
        second = os.path.join(self.dir, "second")
        for d in (first, second):
            os.makedirs(d)
            writeScript(os.path.join(d, "mytool"), "exit 0\n")
        self.patch(os, "environ", {"PATH": f"/nonexistent:{first}:{second}"})
        loaded = self.load("a.cfg", "command = mytool\n")
        self.assertEqual(loaded.path, os.path.join(first, "mytool"))

    def test_bareCommandFromConfigPATH(self):
        """
        When the file sets C{env.PATH}, a bare command is looked up in that
        PATH (the one it will run with), not in the loader's.
        """
        other = os.path.join(self.dir, "other")
        os.makedirs(other)
        writeScript(os.path.join(other, "mytool"), "exit 0\n")
        self.patch(os, "environ", {"PATH": "/nonexistent"})
        loaded = self.load("a.cfg", f"command = mytool\nenv.PATH = {other}\n")
        self.assertEqual(loaded.path, os.path.join(other, "mytool"))

    def test_bareCommandNotFound(self):
        """
        A bare name that is not in PATH is refused at its line.
        """
        self.patch(os, "environ", {"PATH": self.dir})
        message = self.refused("a.cfg", "# x\ncommand = no-such-tool-here\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 2)
        self.assertIn("'no-such-tool-here': not found in PATH", message)

    def test_commandMissing(self):
        """
        An absolute command that does not exist is refused at its line.
        """
        message = self.refused("a.cfg", "\n\ncommand = /nonexistent/prog\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 3)
        self.assertIn("/nonexistent/prog: no such file", message)

    def test_commandNotExecutable(self):
        """
        A command without execute permission, or a directory, is refused
        at its line.
        """
        plain = self.write("plain", "#!/bin/sh\n")
        os.chmod(plain, 0o644)
        message = self.refused("a.cfg", f"command = {plain}\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 1)
        self.assertIn("not an executable file", message)
        message = self.refused("b.cfg", f"args = x\ncommand = {self.dir}\n")
        self.assertAt(message, os.path.join(self.dir, "b.cfg"), 2)
        self.assertIn("not an executable file", message)

    def test_commandRelativeToFile(self):
        """
        A command with a slash but not absolute is relative to the config
        file's directory (not to the loader's working directory).
        """
        os.makedirs(os.path.join(self.dir, "sub", "bin"))
        program = writeScript(os.path.join(self.dir, "sub", "bin", "tool"), "exit 0\n")
        loaded = self.load("sub/a.cfg", "command = bin/tool\n")
        self.assertEqual(loaded.path, program)
        self.assertEqual(loaded.source, os.path.join(self.dir, "sub", "a.cfg"))

    def test_relativeFileName(self):
        """
        A relative config file name is made absolute (the source is
        absolute).
        """
        self.write("rel.cfg", f"command = {self.program}\n")
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.dir)
        loaded = load("rel.cfg", scriptDir=SCRIPTS)
        self.assertEqual(loaded.source, os.path.join(self.dir, "rel.cfg"))

    def test_noCommand(self):
        """
        A process file without C{command} is refused, naming the file.
        """
        path = self.write("a.cfg", "args = -x\nuser = daemon\n")
        with self.assertRaises(BadConfig) as caught:
            load(path, scriptDir=SCRIPTS)
        self.assertTrue(str(caught.exception).startswith(f"{path}: no command"))

    def test_emptyFile(self):
        """
        An empty file (or comments only) has no command.
        """
        message = self.refused("a.cfg", "# nothing\n\n")
        self.assertIn("no command", message)

    def test_unknownKeyIsAnError(self):
        """
        An unknown key is an error at its line (a typo must not pass), and
        the message lists the keys there are.
        """
        message = self.refused("a.cfg", f"command = {self.program}\n\nerror-limt = 3\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 3)
        self.assertIn("unknown key 'error-limt'", message)
        self.assertIn("error-limit", message)

    def test_lineWithoutEquals(self):
        """
        A line without C{=} is an error at its line.
        """
        message = self.refused("a.cfg", f"command = {self.program}\nrespawn\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 2)
        self.assertIn("without '='", message)

    def test_badNumbers(self):
        """
        Numbers outside the policy's limits, or not numbers, are refused at
        their line with the accepted form: error-limit >= 1, probation > 0,
        respawn-time >= 0, term-wait >= 0, all finite.
        """
        cases = [
            ("error-limit", "0", ">= 1"),
            ("error-limit", "2.5", "integer"),
            ("error-limit", "ten", "integer"),
            ("probation", "0", "> 0"),
            ("probation", "-5", "> 0"),
            ("probation", "inf", "> 0"),
            ("probation", "nan", "> 0"),
            ("respawn-time", "-0.1", ">= 0"),
            ("respawn-time", "soon", ">= 0"),
            ("term-wait", "-1", ">= 0"),
            ("term-wait", "inf", ">= 0"),
        ]
        for key, value, accepted in cases:
            message = self.refused("n.cfg", f"command = {self.program}\n# c\n{key} = {value}\n")
            self.assertAt(message, os.path.join(self.dir, "n.cfg"), 3)
            self.assertIn(f"{value!r} for {key}", message)
            self.assertIn(accepted, message)

    def test_numberLimitsAccepted(self):
        """
        The limits themselves are accepted: error-limit 1, respawn-time 0,
        term-wait 0, and a small positive probation.
        """
        loaded = self.load(
            "n.cfg",
            f"command = {self.program}\nerror-limit = 1\nprobation = 0.5\n"
            "respawn-time = 0\nterm-wait = 0\n",
        )
        self.assertEqual(loaded.policy, Policy(1, 0.5, 0.0, 0.0))

    def test_emptyValue(self):
        """
        A key without a value is refused at its line (except C{args} and
        C{env.NAME}, which may be empty).
        """
        message = self.refused("a.cfg", f"command = {self.program}\nuser =\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 2)
        self.assertIn("user needs a value", message)
        loaded = self.load("b.cfg", f"command = {self.program}\nargs =\nenv.EMPTY =\n")
        self.assertEqual(loaded.args, ())
        self.assertEqual(loaded.env, (("EMPTY", ""),))

    def test_argsShellRules(self):
        """
        C{args} is split with POSIX shell rules: quotes group words and are
        removed, a backslash escapes (also a space before a C{#}), a C{#}
        inside a word or quotes is kept and one after white space starts a
        comment.
        """
        loaded = self.load(
            "a.cfg",
            f"command = {self.program}\n"
            r"""args = "a b" 'c "d"' e\ f --color=#fff "x # y" g#h h\ #i # a comment""" "\n",
        )
        self.assertEqual(
            loaded.args, ("a b", 'c "d"', "e f", "--color=#fff", "x # y", "g#h", "h #i")
        )

    def test_argsAllQuoted(self):
        """
        Quotes around the whole C{args} value are shell quotes, not the
        one pair removed from other values: C{"a b" "c d"} is two words.
        """
        loaded = self.load("a.cfg", f'command = {self.program}\nargs = "a b" "c d"\n')
        self.assertEqual(loaded.args, ("a b", "c d"))

    def test_argsUnbalancedQuote(self):
        """
        An unbalanced quote in C{args} is refused at its line.
        """
        message = self.refused("a.cfg", f"command = {self.program}\nargs = -x 'open\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 2)
        self.assertIn("for args", message)

    def test_commentsAndQuotes(self):
        """
        Other values lose a trailing comment and one pair of quotes; a C{#}
        inside quotes or inside a word stays.
        """
        spaced = os.path.join(self.dir, "with space")
        os.makedirs(spaced)
        loaded = self.load(
            "a.cfg",
            f"command = {self.program}   # the program\n"
            f'cwd = "{spaced}"  # quoted\n'
            'env.A = "x # y"\n'
            "env.B = a#b\n"
            "env.C = 'single'\n"
            "user = daemon # who\n",
        )
        self.assertEqual(loaded.path, self.program)
        self.assertEqual(loaded.cwd, spaced)
        self.assertEqual(loaded.env, (("A", "x # y"), ("B", "a#b"), ("C", "single")))
        self.assertEqual(loaded.user, "daemon")

    def test_cwdMustBeDirectory(self):
        """
        A C{cwd} that does not exist, or is a file, is refused at its line;
        a relative one is relative to the config file's directory.
        """
        message = self.refused("a.cfg", f"command = {self.program}\ncwd = /nonexistent/dir\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 2)
        self.assertIn("/nonexistent/dir: no such directory", message)
        message = self.refused("b.cfg", f"cwd = {self.program}\ncommand = {self.program}\n")
        self.assertAt(message, os.path.join(self.dir, "b.cfg"), 1)
        self.assertIn("not a directory", message)
        os.makedirs(os.path.join(self.dir, "here"))
        loaded = self.load("c.cfg", f"command = {self.program}\ncwd = here\n")
        self.assertEqual(loaded.cwd, os.path.join(self.dir, "here"))

    def test_restartScript(self):
        """
        A bare C{restart-script} is in the script directory (made absolute
        when given relative); an absolute one is kept.  Its safety is not
        checked here (the supervisor checks it at registration), so a
        script that does not exist yet is accepted.
        """
        loaded = self.load(
            "a.cfg", f"command = {self.program}\nrestart-script = again\n", scriptDir="rel/dir"
        )
        self.assertEqual(loaded.restartScript, os.path.join(os.getcwd(), "rel", "dir", "again"))
        loaded = self.load(
            "b.cfg", f"command = {self.program}\nrestart-script = /opt/x/again\n"
        )
        self.assertEqual(loaded.restartScript, "/opt/x/again")

    def test_pidfileRelative(self):
        """
        A relative pid file is relative to the config file's directory.
        """
        loaded = self.load("a.cfg", f"command = {self.program}\npidfile = run/p.pid\n")
        self.assertEqual(loaded.pidfile, os.path.join(self.dir, "run", "p.pid"))

    def test_unixGroupKey(self):
        """
        In a file with C{command}, C{group} is the process's Unix group,
        not a group file's name.
        """
        loaded = self.load("a.cfg", f"group = daemon\ncommand = {self.program}\n")
        self.assertIsInstance(loaded, ProcessConfig)
        self.assertEqual(loaded.group, "daemon")

    def test_userWithSpaces(self):
        """
        A user name with white space is refused at its line.
        """
        message = self.refused("a.cfg", f"command = {self.program}\nuser = 'a b'\n")
        self.assertAt(message, os.path.join(self.dir, "a.cfg"), 2)

    def test_missingFile(self):
        """
        A missing file is refused, naming it.
        """
        path = os.path.join(self.dir, "none.cfg")
        with self.assertRaises(BadConfig) as caught:
            load(path, scriptDir=SCRIPTS)
        self.assertEqual(str(caught.exception), f"{path}: no such file")

    def test_directoryAsFile(self):
        """
        A directory given as the config file is refused, naming it.
        """
        with self.assertRaises(BadConfig) as caught:
            load(self.dir, scriptDir=SCRIPTS)
        self.assertIn(f"{self.dir}: is a directory", str(caught.exception))

    def test_badConfigIsKeepaliveError(self):
        """
        L{BadConfig} is a L{KeepaliveError}, so it crosses the control
        socket as such.
        """
        message = self.refused("a.cfg", "nope = 1\n")
        self.assertTrue(issubclass(BadConfig, KeepaliveError), message)

    def test_errorLimitOverride(self):
        """
        C{errorLimit} (C{spawndaemon -n}) wins over the file's
        C{error-limit}, and applies when the file has none.
        """
        loaded = self.load(
            "a.cfg", f"command = {self.program}\nerror-limit = 7\n", errorLimit=3
        )
        self.assertEqual(loaded.policy.errorLimit, 3)
        loaded = self.load("b.cfg", f"command = {self.program}\n", errorLimit=2)
        self.assertEqual(loaded.policy.errorLimit, 2)
        loaded = self.load("c.cfg", f"command = {self.program}\nerror-limit = 7\n")
        self.assertEqual(loaded.policy.errorLimit, 7)

    def test_errorLimitOverrideRefused(self):
        """
        An override below 1 is refused.
        """
        path = self.write("a.cfg", f"command = {self.program}\n")
        for bad in (0, -1):
            with self.assertRaises(BadConfig) as caught:
                load(path, scriptDir=SCRIPTS, errorLimit=bad)
            self.assertIn("at least 1", str(caught.exception))


class GroupFileTests(_Files, SynchronousTestCase):
    """
    Reading a group file.
    """

    def setUp(self) -> None:
        super().setUp()
        self.one = self.write("members/one.cfg", f"command = {self.program}\nargs = 1\n")
        self.two = self.write(
            "members/two.cfg", f"command = {self.program}\nrestart-script = re-two\n"
        )
        self.three = self.write("three.cfg", f"command = {self.program}\nargs = 3\n")

    def test_group(self):
        """
        A group file gives the group's name, its source, its members in
        file order (relative paths relative to the group file, absolute
        ones kept) and, per member, whether it is critical.
        """
        path = self.write(
            "groups/web.cfg",
            "# the web group\n"
            "group = web\n"
            "member = ../members/one.cfg\n"
            f"critical = {self.two}\n"
            "member = ../three.cfg\n",
        )
        loaded = load(path, scriptDir="/srv/s")
        self.assertIsInstance(loaded, GroupConfig)
        self.assertEqual(loaded.name, "web")
        self.assertEqual(loaded.source, path)
        self.assertEqual([m.source for m in loaded.members], [self.one, self.two, self.three])
        self.assertEqual([m.args for m in loaded.members], [("1",), (), ("3",)])
        self.assertEqual(loaded.critical, (False, True, False))
        self.assertEqual(loaded.members[1].restartScript, "/srv/s/re-two")

    def test_groupErrorLimitOverride(self):
        """
        The error limit override applies to every member.
        """
        path = self.write("g.cfg", "group = g\nmember = members/one.cfg\ncritical = three.cfg\n")
        loaded = load(path, scriptDir=SCRIPTS, errorLimit=4)
        self.assertEqual([m.policy.errorLimit for m in loaded.members], [4, 4])

    def test_memberError(self):
        """
        An error in a member file names the member file and its line, and
        the group file's line that names the member.
        """
        self.write("members/bad.cfg", f"command = {self.program}\n\nprobation = 0\n")
        message = self.refused(
            "g.cfg", "group = g\nmember = members/one.cfg\nmember = members/bad.cfg\n"
        )
        bad = os.path.join(self.dir, "members", "bad.cfg")
        self.assertAt(message, bad, 3)
        self.assertIn(f"member of the group file {self.dir}/g.cfg:3", message)

    def test_memberMissing(self):
        """
        A member file that does not exist is named, with the group file's
        line.
        """
        message = self.refused("g.cfg", "group = g\n\nmember = nothere.cfg\n")
        self.assertTrue(message.startswith(f"{self.dir}/nothere.cfg: no such file"), message)
        self.assertIn(f"{self.dir}/g.cfg:3", message)

    def test_nestedGroupRefused(self):
        """
        A member that is itself a group file is refused at the line that
        names it; so is a group that names itself.
        """
        self.write("inner.cfg", "group = inner\nmember = three.cfg\n")
        message = self.refused(
            "outer.cfg", "group = outer\nmember = three.cfg\nmember = inner.cfg\n"
        )
        self.assertAt(message, os.path.join(self.dir, "outer.cfg"), 3)
        self.assertIn("groups cannot be nested", message)
        message = self.refused("self.cfg", "group = me\ncritical = self.cfg\n")
        self.assertAt(message, os.path.join(self.dir, "self.cfg"), 2)
        self.assertIn("groups cannot be nested", message)

    def test_noMembers(self):
        """
        A group file with a C{group} line and no members is refused at that
        line.
        """
        message = self.refused("g.cfg", "# empty\ngroup = lonely\n")
        self.assertAt(message, os.path.join(self.dir, "g.cfg"), 2)
        self.assertIn("no members", message)

    def test_membersWithoutName(self):
        """
        Member lines without a C{group} line are refused at the first
        member line.
        """
        message = self.refused("g.cfg", "\nmember = three.cfg\ncritical = members/one.cfg\n")
        self.assertAt(message, os.path.join(self.dir, "g.cfg"), 2)
        self.assertIn("group = NAME", message)

    def test_commandAndMembers(self):
        """
        A file with both C{command} and member lines is refused at the
        C{command} line; so is any process key in a group file.
        """
        message = self.refused(
            "g.cfg", f"group = g\nmember = three.cfg\ncommand = {self.program}\n"
        )
        self.assertAt(message, os.path.join(self.dir, "g.cfg"), 3)
        self.assertIn("command belongs in a process config file", message)
        message = self.refused("h.cfg", "group = g\nenv.X = 1\nmember = three.cfg\n")
        self.assertAt(message, os.path.join(self.dir, "h.cfg"), 2)
        self.assertIn("env.X", message)

    def test_duplicateMember(self):
        """
        A member listed twice (also once as member and once as critical) is
        refused at the second line.
        """
        message = self.refused(
            "g.cfg", f"group = g\nmember = three.cfg\ncritical = {self.three}\n"
        )
        self.assertAt(message, os.path.join(self.dir, "g.cfg"), 3)
        self.assertIn("already a member (line 2)", message)

    def test_groupConfigNeedsOneFlagPerMember(self):
        """
        L{GroupConfig} refuses a critical tuple of another length than its
        members.
        """
        member = ProcessConfig(self.program)
        self.assertRaises(ValueError, GroupConfig, "g", "/x", (member,), ())


class ResolveIdsTests(SynchronousTestCase):
    """
    L{ProcessConfig.resolveIds}: user and group to uid and gid.
    """

    def setUp(self) -> None:
        try:
            self.nobody = pwd.getpwnam("nobody")
            self.daemonGroup = grp.getgrnam("daemon")
        except KeyError:
            raise SkipTest("needs the user nobody and the group daemon")
        self.unknownUid = next(
            uid for uid in range(40000, 60000) if not _hasUid(uid)
        )

    def ids(self, **kw) -> tuple[int | None, int | None]:
        return ProcessConfig("/bin/true", source="/etc/x.cfg", **kw).resolveIds()

    def test_neither(self):
        """
        Without user or group: L{None} for both (keepalive's own).
        """
        self.assertEqual(self.ids(), (None, None))

    def test_userNamePrimaryGroup(self):
        """
        A user name gives its uid and, without C{group}, its primary gid.
        """
        self.assertEqual(self.ids(user="nobody"), (self.nobody.pw_uid, self.nobody.pw_gid))

    def test_userNumber(self):
        """
        A user number with a password entry gives that entry's primary gid.
        """
        self.assertEqual(
            self.ids(user=str(self.nobody.pw_uid)), (self.nobody.pw_uid, self.nobody.pw_gid)
        )

    def test_groupOverridesPrimary(self):
        """
        A C{group} (name or number) wins over the user's primary group.
        """
        self.assertEqual(
            self.ids(user="nobody", group="daemon"), (self.nobody.pw_uid, self.daemonGroup.gr_gid)
        )
        self.assertEqual(self.ids(user="nobody", group="4242"), (self.nobody.pw_uid, 4242))

    def test_groupOnly(self):
        """
        Only a group: the uid stays keepalive's own.
        """
        self.assertEqual(self.ids(group="daemon"), (None, self.daemonGroup.gr_gid))

    def test_unknownUser(self):
        """
        An unknown user name is refused, naming the config file.
        """
        with self.assertRaises(BadConfig) as caught:
            self.ids(user="no-such-user-xyz")
        self.assertEqual(
            str(caught.exception), "/etc/x.cfg: user 'no-such-user-xyz': no such user"
        )

    def test_unknownGroup(self):
        """
        An unknown group name is refused, naming the config file.
        """
        with self.assertRaises(BadConfig) as caught:
            self.ids(user="nobody", group="no-such-group-xyz")
        self.assertIn("/etc/x.cfg: group 'no-such-group-xyz': no such group", str(caught.exception))

    def test_numericUserWithoutEntry(self):
        """
        A user number without a password entry is used as it is with a
        C{group}; without one it is refused (its primary group is unknown,
        and keepalive's own gid must not leak to it).
        """
        self.assertEqual(
            self.ids(user=str(self.unknownUid), group="5"), (self.unknownUid, 5)
        )
        with self.assertRaises(BadConfig) as caught:
            self.ids(user=str(self.unknownUid))
        self.assertIn("give a group", str(caught.exception))


def _hasUid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


class JSONTests(SynchronousTestCase):
    """
    L{ProcessConfig.toJSON} and L{ProcessConfig.fromJSON}.
    """

    full = ProcessConfig(
        path="/usr/sbin/d",
        args=("-x", "two words", "ünïcode", ""),
        user="daemon",
        group="7",
        cwd="/var/lib/d",
        env={"Z": "last", "A": "first", "EMPTY": ""},
        restartScript="/etc/keepalive.d/re-d",
        policy=Policy(errorLimit=3, probation=12.5, respawnTime=0.0, termWait=9.25),
        pidfile="/run/d.pid",
        source="/etc/keepalive.d/d.cfg",
    )

    def test_roundTripEveryField(self):
        """
        Every field, the policy included, survives C{toJSON}/C{fromJSON}.
        """
        back = ProcessConfig.fromJSON(self.full.toJSON())
        self.assertEqual(back, self.full)
        for field in attrs.fields(ProcessConfig):
            self.assertEqual(getattr(back, field.name), getattr(self.full, field.name), field.name)

    def test_roundTripDefaults(self):
        """
        A config with every optional field unset survives the round trip.
        """
        plain = ProcessConfig("/bin/true")
        self.assertEqual(ProcessConfig.fromJSON(plain.toJSON()), plain)

    def test_stableText(self):
        """
        The text is stable: keys sorted, no white space, and equal configs
        (env given in another order) give the same text.
        """
        other = attrs.evolve(self.full, env=[("EMPTY", ""), ("Z", "last"), ("A", "first")])
        self.assertEqual(other.toJSON(), self.full.toJSON())
        data = json.loads(self.full.toJSON())
        self.assertEqual(list(data), sorted(data))
        self.assertEqual(list(data["policy"]), sorted(data["policy"]))
        self.assertNotIn(" ", re.sub(r'"[^"]*"', "", self.full.toJSON()))

    def test_fromJSONRefusesOtherText(self):
        """
        Text that is not a config's JSON raises L{ValueError}.
        """
        good = json.loads(self.full.toJSON())
        missing = dict(good)
        del missing["path"]
        wrongType = dict(good, args="-x")
        badPolicy = dict(good, policy=dict(good["policy"], errorLimit=0))
        boolLimit = dict(good, policy=dict(good["policy"], errorLimit=True))
        for text in ("", "{", "[]", json.dumps(missing), json.dumps(wrongType),
                     json.dumps(badPolicy), json.dumps(boolLimit)):
            self.assertRaises(ValueError, ProcessConfig.fromJSON, text)

    def test_loadedRoundTrip(self):
        """
        A config loaded from a file survives the round trip.
        """
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        program = writeScript(os.path.join(d, "p"), "exit 0\n")
        path = os.path.join(d, "p.cfg")
        with open(path, "w") as f:
            f.write(f"command = {program}\nargs = a 'b c'\nenv.X = y\nterm-wait = 0.5\n")
        loaded = config.load(path, scriptDir=SCRIPTS)
        self.assertEqual(ProcessConfig.fromJSON(loaded.toJSON()), loaded)
