"""
keepalive's process config files and group files.

A B{process config file} says how to run one supervised program, in the
C{key = value} format of the other sysmon configs (L{sysmon.config})::

    # a whole-line comment
    command = /usr/sbin/mydaemon      # required; a bare name is looked up in PATH
    args = -f --port 8080 "two words" # split like a POSIX shell line
    user = daemon                     # name or number; group likewise
    group = daemon
    cwd = /var/lib/mydaemon           # an existing directory
    env.LANG = C                      # any number of env.NAME keys
    restart-script = restart-mydaemon # a bare name is in the script directory
    error-limit = 10                  # failures within probation before "down" (>= 1)
    probation = 300                   # seconds (> 0)
    respawn-time = 1                  # seconds (>= 0)
    term-wait = 2                     # seconds (>= 0) from SIGTERM to SIGKILL
    pidfile = /run/mydaemon.pid       # the program daemonizes; its pid is read here

A B{group file} has a C{group} line, member lines and no C{command}::

    group = web
    member = nginx.cfg                # relative to the group file's directory
    critical = app.cfg                # a member whose failure restarts the group

Rules, beyond those of L{sysmon.config}:

  - an unknown key or a line without C{=} is an B{error} (not a warning as
    in the daemons' own config files): a typo in a supervised command must
    not pass silently;
  - a C{#} that starts a value or follows white space, outside quotes, starts
    a comment (C{"a # b"} and C{a#b} keep theirs);
  - one pair of matching quotes around a value is removed; C{args} is split
    by L{shlex} with POSIX rules instead, so its quotes group words;
  - relative paths (C{command} with a C{/}, C{cwd}, C{pidfile}, C{member},
    C{critical}) are relative to the directory of the file that names them;
    C{restart-script} is relative to the script directory.  Every path in a
    L{ProcessConfig} is absolute.

Every error is a L{BadConfig} whose message starts with C{file:line} (or
only the file for a missing file or a missing C{command}).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shlex
import shutil
from typing import Any, Iterable, Mapping

import attrs

from sysmon.config import (
    Coercer,
    Config,
    ConfigError,
    Key,
    Schema,
    integer,
    number,
    string,
)
from sysmon.keepalive.errors import BadConfig
from sysmon.keepalive.policy import Policy

__all__ = [
    "GROUP_SCHEMA_KEYS",
    "GroupConfig",
    "PROCESS_KEYS",
    "ProcessConfig",
    "SCHEMA",
    "load",
]


def _argsSplit(text: str) -> tuple[str, ...]:
    return tuple(shlex.split(text, comments=False, posix=True))


def _name(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(text)
    return text


def _positive(text: str) -> float:
    value = number().convert(text)
    if value <= 0:
        raise ValueError(text)
    return value


_args = Coercer(_argsSplit, "arguments split like a POSIX shell line (balanced quotes)")
_idName = Coercer(_name, "a name or a number, without spaces")
_errorLimit = integer(1)
_seconds = Coercer(_positive, "a number > 0")
_notNegative = number(0)

PROCESS_KEYS = (
    "command",
    "args",
    "user",
    "group",
    "cwd",
    "env.",
    "restart-script",
    "error-limit",
    "probation",
    "respawn-time",
    "term-wait",
    "pidfile",
)
"""
The keys of a process config file (C{env.} is the prefix of C{env.NAME}).
"""

GROUP_SCHEMA_KEYS = ("group", "member", "critical")
"""
The keys of a group file.
"""

SCHEMA = Schema(
    [
        Key("command", string, help="the program: an absolute path or a name looked up in PATH"),
        Key("args", _args, (), allowEmpty=True, help="its arguments, split like a shell line"),
        Key("user", _idName, help="run it as this user (name or number)"),
        Key("group", _idName, help="run it with this group; in a group file: the group's name"),
        Key("cwd", string, help="its working directory"),
        Key("env.", string, prefix=True, allowEmpty=True, help="env.NAME = VALUE: environment"),
        Key("restart-script", string, help="run this to restart it (in the script directory)"),
        Key("error-limit", _errorLimit, help="failures within probation before it is down"),
        Key("probation", _seconds, help="seconds over which failures count"),
        Key("respawn-time", _notNegative, help="died sooner than this after start: wait this long"),
        Key("term-wait", _notNegative, help="seconds from SIGTERM to SIGKILL when stopping it"),
        Key("pidfile", string, help="the program daemonizes; its pid is read from this file"),
        Key("member", string, multiple=True, help="group file: a member's config file"),
        Key("critical", string, multiple=True, help="group file: a member that restarts the group"),
    ],
    unquote=False,
)
"""
The keys of both kinds of file; L{load} tells them apart (a group file has
C{member} or C{critical} lines, or only a C{group} line).  Values reach the
schema with comments already removed and, except for C{args}, unquoted.
"""


def _sortedEnv(value: Iterable[Any] | Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), str(v)) for k, v in items))


def _optional(value: str | None) -> str | None:
    return None if value is None else str(value)


@attrs.frozen
class ProcessConfig:
    """
    One supervised program, as its process config file describes it.

    @ivar path: the executable's absolute path.
    @ivar args: its arguments (without C{argv[0]}).
    @ivar user: the user to run it as (name or number, as written), or
        L{None}: keepalive's own.
    @ivar group: the group to run it with (name or number), or L{None}: the
        user's primary group (or keepalive's own when no user is given).
    @ivar cwd: its absolute working directory, or L{None}: keepalive's.
    @ivar env: C{(name, value)} environment additions, sorted by name.
    @ivar restartScript: the absolute path of its restart script, or
        L{None}: restart it by running C{path} again.
    @ivar policy: its restart parameters.
    @ivar pidfile: the absolute path of the pid file a daemonizing program
        writes, or L{None}.
    @ivar source: the absolute path of the config file it came from.
    """

    path: str
    args: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(map(str, v)))
    user: str | None = attrs.field(default=None, converter=_optional)
    group: str | None = attrs.field(default=None, converter=_optional)
    cwd: str | None = attrs.field(default=None, converter=_optional)
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_sortedEnv)
    restartScript: str | None = attrs.field(default=None, converter=_optional)
    policy: Policy = attrs.field(factory=Policy)
    pidfile: str | None = attrs.field(default=None, converter=_optional)
    source: str = ""

    @property
    def argv(self) -> tuple[str, ...]:
        """
        The command line: C{path} then C{args}.
        """
        return (self.path,) + self.args

    @property
    def basename(self) -> str:
        """
        The executable's file name (log files are C{<basename>.<pid>}).
        """
        return os.path.basename(self.path)

    def resolveIds(self) -> tuple[int | None, int | None]:
        """
        The uid and gid to run the program with.

        A number is taken as it is; a name is looked up in the password and
        group databases now (not at load time: the account may be created
        after the config file).  With only C{user}, the gid is the user's
        primary group.

        @return: C{(uid, gid)}, L{None} for "keepalive's own".
        @raise BadConfig: an unknown user or group, or a numeric user that
            has no password entry and no C{group} (its primary group is
            unknown).
        """
        uid: int | None = None
        gid: int | None = None
        primary: int | None = None
        if self.user is not None:
            try:
                entry = pwd.getpwuid(int(self.user)) if self.user.isdigit() else (
                    pwd.getpwnam(self.user))
            except KeyError:
                entry = None
            if entry is not None:
                uid, primary = entry.pw_uid, entry.pw_gid
            elif self.user.isdigit():
                uid = int(self.user)
            else:
                raise BadConfig(f"{self.source}: user {self.user!r}: no such user")
        if self.group is not None:
            if self.group.isdigit():
                gid = int(self.group)
            else:
                try:
                    gid = grp.getgrnam(self.group).gr_gid
                except KeyError:
                    raise BadConfig(
                        f"{self.source}: group {self.group!r}: no such group"
                    ) from None
        elif uid is not None:
            if primary is None:
                raise BadConfig(
                    f"{self.source}: user {self.user} has no password entry, so its "
                    "primary group is unknown; give a group"
                )
            gid = primary
        return uid, gid

    def toJSON(self) -> str:
        """
        The config as JSON text (stable: keys sorted, no white space), for
        the table and the control channel.
        """
        return json.dumps(
            {
                "path": self.path,
                "args": list(self.args),
                "user": self.user,
                "group": self.group,
                "cwd": self.cwd,
                "env": [list(pair) for pair in self.env],
                "restartScript": self.restartScript,
                "policy": {
                    "errorLimit": self.policy.errorLimit,
                    "probation": self.policy.probation,
                    "respawnTime": self.policy.respawnTime,
                    "termWait": self.policy.termWait,
                },
                "pidfile": self.pidfile,
                "source": self.source,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def fromJSON(cls, text: str) -> ProcessConfig:
        """
        The config that L{toJSON} gave C{text} for.

        @raise ValueError: C{text} is not such JSON.
        """
        try:
            data = json.loads(text)
            policy = data["policy"]
            return cls(
                path=_text(data["path"]),
                args=[_text(a) for a in _list(data["args"])],
                user=_textOrNone(data["user"]),
                group=_textOrNone(data["group"]),
                cwd=_textOrNone(data["cwd"]),
                env=[(_text(k), _text(v)) for k, v in map(_list, _list(data["env"]))],
                restartScript=_textOrNone(data["restartScript"]),
                policy=Policy(
                    errorLimit=_int(policy["errorLimit"]),
                    probation=float(policy["probation"]),
                    respawnTime=float(policy["respawnTime"]),
                    termWait=float(policy["termWait"]),
                ),
                pidfile=_textOrNone(data["pidfile"]),
                source=_text(data["source"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"not a process config: {e!r}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, not {value!r}")
    return value


def _textOrNone(value: Any) -> str | None:
    return None if value is None else _text(value)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, not {value!r}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, not {value!r}")
    return value


@attrs.frozen
class GroupConfig:
    """
    A group of supervised programs, as its group file describes it.

    @ivar name: the group's name (C{spawndaemon -g NAME}).
    @ivar source: the group file's absolute path.
    @ivar members: the members, in file order.
    @ivar critical: for each member, whether its failure restarts the whole
        group.
    """

    name: str
    source: str
    members: tuple[ProcessConfig, ...] = attrs.field(converter=tuple)
    critical: tuple[bool, ...] = attrs.field(converter=lambda v: tuple(map(bool, v)))

    @critical.validator
    def _sameLength(self, attribute: attrs.Attribute, value: tuple[bool, ...]) -> None:
        if len(value) != len(self.members):
            raise ValueError("critical needs one flag per member")


# -- reading -------------------------------------------------------------------


def _commentStart(value: str) -> int:
    """
    Where the comment in C{value} starts (C{len(value)} if there is none):
    at a C{#} that starts the value or follows white space, outside quotes;
    a backslash outside single quotes protects the next character.
    """
    quote = None
    boundary = True  # at the start, or after unescaped white space
    i = 0
    while i < len(value):
        c = value[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif c == "\\":
            i += 1
        elif quote == '"':
            if c == '"':
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and boundary:
            return i
        boundary = quote is None and c.isspace()
        i += 1
    return len(value)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _prepare(raw: str) -> str:
    """
    One line as the schema should see it: the value without its comment
    and, except for C{args}, without one pair of quotes.
    """
    text = raw.strip()
    if not text or text.startswith("#") or "=" not in text:
        return raw
    name, _, value = text.partition("=")
    value = value.strip()
    value = value[: _commentStart(value)].rstrip()
    if name.strip() != "args":
        value = _unquote(value)
    return f"{name.strip()} = {value}"


def _read(path: str) -> Config:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "is a directory, not a config file") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
    config = SCHEMA.parseLines([_prepare(line) for line in lines], path)
    if config.warnings:
        # An unknown key or a line without '=' is an error here.
        first = config.warnings[0]
        message = first.message
        if message.startswith("unknown key"):
            message = message.replace(" ignored", "") + (
                " (a process config file has "
                + ", ".join(k + "NAME" if k.endswith(".") else k for k in PROCESS_KEYS[:-1])
                + f" and {PROCESS_KEYS[-1]}; a group file has group, member and critical)"
            )
        else:
            message = message.replace("ignored line", "line")
        raise ConfigError(first.path, first.line, message)
    return config


def _line(config: Config, key: str) -> int | None:
    """
    The line of the last C{key} line (the one whose value counts).
    """
    lines = [e.line for e in config.entries if e.key == key]
    return lines[-1] if lines else None


def _relative(base: str, value: str) -> str:
    return os.path.normpath(os.path.join(base, value))


def _command(config: Config, path: str, env: Mapping[str, str]) -> str:
    line = _line(config, "command")
    value = config["command"]
    if "/" not in value:
        found = shutil.which(value, path=env.get("PATH", os.environ.get("PATH", os.defpath)))
        if found is None:
            raise ConfigError(path, line, f"command {value!r}: not found in PATH")
        return os.path.abspath(found)
    candidate = _relative(os.path.dirname(path), value)
    if not os.path.exists(candidate):
        raise ConfigError(path, line, f"command {candidate}: no such file")
    if not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
        raise ConfigError(path, line, f"command {candidate}: not an executable file")
    return candidate


def _processConfig(
    config: Config, path: str, scriptDir: str, errorLimit: int | None
) -> ProcessConfig:
    base = os.path.dirname(path)
    if config["command"] is None:
        raise ConfigError(
            path, None, "no command: a process config file needs a 'command = PROGRAM' line"
        )
    env = {name: ("" if value is None else value) for name, value in config["env."].items()}
    executable = _command(config, path, env)
    cwd = config["cwd"]
    if cwd is not None:
        cwd = _relative(base, cwd)
        if not os.path.isdir(cwd):
            why = "not a directory" if os.path.exists(cwd) else "no such directory"
            raise ConfigError(path, _line(config, "cwd"), f"cwd {cwd}: {why}")
    script = config["restart-script"]
    if script is not None:
        script = _relative(os.path.abspath(scriptDir), script)
    pidfile = config["pidfile"]
    if pidfile is not None:
        pidfile = _relative(base, pidfile)
    values = {
        "errorLimit": config["error-limit"] if errorLimit is None else errorLimit,
        "probation": config["probation"],
        "respawnTime": config["respawn-time"],
        "termWait": config["term-wait"],
    }
    policy = Policy(**{k: v for k, v in values.items() if v is not None})
    return ProcessConfig(
        path=executable,
        args=config["args"] or (),
        user=config["user"],
        group=config["group"],
        cwd=cwd,
        env=env,
        restartScript=script,
        policy=policy,
        pidfile=pidfile,
        source=path,
    )


def _isGroupFile(config: Config) -> bool:
    keys = {entry.key for entry in config.entries}
    return bool(keys & {"member", "critical"}) or keys == {"group"}


def _groupConfig(
    config: Config, path: str, scriptDir: str, errorLimit: int | None
) -> GroupConfig:
    for entry in config.entries:
        if entry.key not in GROUP_SCHEMA_KEYS:
            key = "env." + (entry.variable or "") if entry.key == "env." else entry.key
            raise ConfigError(
                path,
                entry.line,
                f"{key} belongs in a process config file, and this is a group file "
                "(it has member lines): a file has either command or member lines",
            )
    memberEntries = [e for e in config.entries if e.key in ("member", "critical")]
    if config["group"] is None:
        raise ConfigError(
            path, memberEntries[0].line, "member lines need a 'group = NAME' line"
        )
    if not memberEntries:
        raise ConfigError(
            path,
            _line(config, "group"),
            f"group {config['group']!r} has no members (add 'member = FILE' lines)",
        )
    base = os.path.dirname(path)
    members: list[ProcessConfig] = []
    critical: list[bool] = []
    seen: dict[str, int] = {}
    for entry in memberEntries:
        memberPath = _relative(base, entry.value)
        if memberPath in seen:
            raise ConfigError(
                path,
                entry.line,
                f"{memberPath} is already a member (line {seen[memberPath]})",
            )
        seen[memberPath] = entry.line
        try:
            memberConfig = _read(memberPath)
            if _isGroupFile(memberConfig):
                raise ConfigError(
                    path,
                    entry.line,
                    f"member {memberPath} is itself a group file: groups cannot be nested",
                )
            member = _processConfig(memberConfig, memberPath, scriptDir, errorLimit)
        except ConfigError as e:
            if e.path == path:
                raise
            raise ConfigError(
                e.path, e.line, f"{e.message} (member of the group file {path}:{entry.line})"
            ) from None
        members.append(member)
        critical.append(entry.key == "critical")
    return GroupConfig(config["group"], path, members, critical)


def load(
    path: str, *, scriptDir: str, errorLimit: int | None = None
) -> ProcessConfig | GroupConfig:
    """
    Read a process config file or a group file.

    @param path: the file; a relative path is made absolute.
    @param scriptDir: the directory of restart scripts (a relative
        C{restart-script} is in it).
    @param errorLimit: when not L{None}, the error limit of the process (of
        every member of a group) instead of the file's C{error-limit}
        (C{spawndaemon -n}).
    @return: a L{ProcessConfig}, or a L{GroupConfig} for a group file.
    @raise BadConfig: the file cannot be used; the message names the file
        and line (for a member of a group: the member file and its line,
        then the group file's line).
    """
    if errorLimit is not None and (isinstance(errorLimit, bool) or errorLimit < 1):
        raise BadConfig(f"error limit {errorLimit}: must be at least 1")
    path = os.path.abspath(path)
    try:
        config = _read(path)
        if _isGroupFile(config):
            return _groupConfig(config, path, scriptDir, errorLimit)
        return _processConfig(config, path, scriptDir, errorLimit)
    except ConfigError as e:
        raise BadConfig(str(e)) from e
