"""
C{spawndaemon}: the command line of keepalive (console script
C{spawndaemon = sysmon.keepalive.cli:main}).

It registers and unregisters processes with a running keepalive over its
control socket (L{sysmon.keepalive.control}), stops keepalive, tells
whether it runs, and lists the monitored process table, which it reads
itself (read-only), so C{-L} works whether or not keepalive runs.  The
forms, options and exit statuses are in L{HELP} (C{spawndaemon --help}).

Machine listing (C{spawndaemon -L -v machine}): one record per line,
fields separated by a tab, the record type first.  An empty value is
C{-}; a value that is C{-} itself is written C{\\-}; a tab, newline,
carriage return and backslash in a value are written C{\\t}, C{\\n},
C{\\r} and C{\\\\}.  Times are seconds since the epoch with three
decimals.  New fields, if any, will only ever be added at the end.

The C{keepalive} record (first, when asked for)::

     1  type        keepalive
     2  running     yes, no, or unknown (the socket cannot be reached,
                    e.g. permission denied; the reason goes to stderr)
     3  pid         keepalive's pid, or -
     4  since       when keepalive started, or -
     5  table       the table's path
     6  control     the control socket's path
     7  processes   the number of processes in the table

The C{process} records, one per table entry, by slot::

     1  type        process
     2  slot        the table slot (spawndaemon -s SLOT)
     3  state       start ok dead respawn down shutdown daemonize
     4  pid         the process id, or -
     5  child       1: started by the running keepalive, 0: not its child
     6  started     when it was last started, or -
     7  restarts    how many times it was restarted
     8  failures    failures within its probation period, counted now
     9  group       its group, or -
    10  critical    1: its failure restarts its group, else 0
    11  last-exit   how it last ended ("exited with status 3"), or -
    12  log-path    the file its output goes to, or -
    13  config      the config file it was registered from
    14  path        the program's absolute path
    15  args        its arguments joined by shlex.join (- for none);
                    shlex.split gives them back
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from typing import Any, Awaitable, Callable, Sequence, TextIO, TypeVar

import attrs

from sysmon.keepalive import config as kaconfig
from sysmon.keepalive.control import (
    DEFAULT_CONTROL,
    Adopt,
    ControlPermissionDenied,
    Ping,
    Quit,
    Register,
    Unregister,
    call,
)
from sysmon.keepalive.errors import BadRequest, KeepaliveError, KeepaliveNotRunning
from sysmon.keepalive.table import Table
from sysmon.listing import machineLine, printable

__all__ = [
    "DEFAULT_SCRIPT_DIR",
    "DEFAULT_TABLE",
    "HELP",
    "Request",
    "Refusal",
    "USAGE",
    "UsageError",
    "formatUptime",
    "main",
    "parse",
]

DEFAULT_TABLE = "/etc/keepalive.d/keepalive.data"
DEFAULT_SCRIPT_DIR = "/etc/keepalive.d"

# How long -q and -L wait for keepalive's answer to Ping.
PING_TIMEOUT = 10.0

_T = TypeVar("_T")

USAGE = """\
usage: spawndaemon [-n TIMES] [-a] [-c down=CODE] [-c reject=CODE] -r CONFIG
       spawndaemon [-a] -R CONFIG PID
       spawndaemon [-k] [-a] -d PATH [ARGS...]
       spawndaemon [-k] -p PID | -g GROUP | -s SLOT
       spawndaemon -L [-v human|machine [processes|keepalive]]
       spawndaemon -Q | -q | -h
  with any of: --control SOCKET  --table FILE  --script-dir DIR
"""

HELP = (
    "spawndaemon: register processes with keepalive, which restarts them when they die.\n\n"
    + USAGE
    + f"""
Forms:
  -r CONFIG       register the process (or group) that the config file
                  describes and start it; registering a process that is
                  "down" again brings it back
    -n TIMES      error limit: failures within the probation period before
                  keepalive stops restarting it (overrides error-limit)
    -a            find it (once it daemonizes) by name and arguments
    -c down=CODE  its restart script exiting with CODE puts it down
    -c reject=CODE  its restart script exiting with CODE refused: the
                  attempt counts as a failure
  -R CONFIG PID   register the running process PID (not started by
                  keepalive) as the program of CONFIG; -a: check its
                  arguments too
  -d PATH [ARGS...]  unregister the entries running PATH (a bare name is
                  looked up in PATH); everything after PATH is ARGS, and
                  with -a only entries with exactly these arguments match
  -p PID          unregister the entry of process PID
  -g GROUP        unregister the members of GROUP
  -s SLOT         unregister the entry in table slot SLOT
    -k            (with -d -p -g -s) also stop the processes: SIGTERM, then
                  SIGKILL after their term-wait
  -L              list the table: keepalive's state, then the processes
    -v human      aligned columns (the default)
    -v machine    one record per line, tab-separated (below)
       processes  only the processes;  keepalive: only keepalive's state
  -Q              stop keepalive for good: it stops the processes it
                  started, leaves those it adopted running, clears its table
  -q              exit 0 if keepalive is running, 1 if not (prints nothing)
  -h, --help      this text

Options:
  --control SOCKET  keepalive's control socket (default {DEFAULT_CONTROL})
  --table FILE      the table that -L reads (default {DEFAULT_TABLE})
  --script-dir DIR  the restart script directory (default {DEFAULT_SCRIPT_DIR}),
                    for checking -r and -R config files before they are
                    sent: a bad file is reported with file:line even when
                    keepalive is not running

Options may be clustered (-ka) and an option's value may follow it
directly (-n5).  The cluster options -i -F -B -Z -P -S -U -x -D -X -z -o of
the Cluster Tools spawndaemon are refused: sysmon keepalive supervises this
host only.

Human listing columns: SLOT STATE PID UPTIME RESTARTS FAILURES GROUP COMMAND
  (UPTIME for running processes; FAILURES within the probation period;
  GROUP ends in * for a critical member; COMMAND is cut to the terminal).

Machine listing: fields separated by a tab, the record type first; "-" is
an empty value, "\\-" a value that is "-"; tab, newline, carriage return
and backslash in a value are written \\t \\n \\r \\\\; times are seconds
since the epoch with 3 decimals.  Fields may be added at the end later.
  keepalive  running(yes/no/unknown)  pid  since  table  control  processes
  process  slot  state  pid  child(0/1)  started  restarts  failures
           group  critical(0/1)  last-exit  log-path  config  path
           args(shlex.join)

Exit status:
  0  done (-q: keepalive is running)
  1  keepalive refused or could not do it, keepalive is not running, or a
     config file or the table cannot be used (-q: keepalive is not running)
  2  usage error, or a cluster option
"""
)


class UsageError(Exception):
    """
    The command line is not one of spawndaemon's forms; C{str()} says why.
    """


class Refusal(Exception):
    """
    The command line uses an option of the cluster spawndaemon that sysmon
    does not offer; C{str()} says why.
    """


_SINGLE_SYSTEM = (
    "belongs to a single-system-image cluster; sysmon keepalive supervises this "
    "host only"
)

_REFUSED = {
    "i": f"-i: cluster-wide or node-list placement {_SINGLE_SYSTEM}",
    "F": f"-F: cluster node placement {_SINGLE_SYSTEM}",
    "B": f"-B: backup node placement {_SINGLE_SYSTEM}",
    "Z": f"-Z: choosing the node to restart on {_SINGLE_SYSTEM}",
    "U": f"-U: cluster-wide placement {_SINGLE_SYSTEM}",
    "P": f"-P: addressing a process on a cluster node {_SINGLE_SYSTEM}",
    "S": f"-S: addressing a slot on a cluster node {_SINGLE_SYSTEM}",
    "D": f"-D: addressing a program on a cluster node {_SINGLE_SYSTEM}",
    "x": f"-x: cluster operations on one entry {_SINGLE_SYSTEM}",
    "X": f"-X: a Cluster Tools option that {_SINGLE_SYSTEM}",
    "o": f"-o: a Cluster Tools option that {_SINGLE_SYSTEM}",
    "z": (
        "-z: sizing the table belongs to the cluster's fixed-size memory-mapped "
        "table; sysmon keepalive's table grows as needed"
    ),
}

_FLAGS = frozenset("akLQqh")
_VALUED = frozenset("ncrRdpgsv")
_ACTIONS = {
    "r": "register",
    "R": "adopt",
    "d": "unregister",
    "p": "unregister",
    "g": "unregister",
    "s": "unregister",
    "L": "list",
    "Q": "quit",
    "q": "query",
}
_LONG_VALUED = {"control": "control", "table": "table", "script-dir": "scriptDir"}
_SECTIONS = ("keepalive", "processes")
_DIGITS = re.compile(r"[0-9]+\Z")


@attrs.frozen
class Request:
    """
    What a command line asks for.

    @ivar action: C{register}, C{adopt}, C{unregister}, C{list}, C{quit},
        C{query} (C{-q}) or C{help}.
    @ivar option: the option letter that chose the action (C{d}, C{p}, C{g}
        or C{s} for C{unregister}).
    @ivar config: the config file's absolute path (C{-r}, C{-R}).
    @ivar pid: the process id (C{-R}, C{-p}).
    @ivar errorLimit: C{-n}.
    @ivar matchArgs: C{-a}.
    @ivar downCode: C{-c down=}.
    @ivar rejectCode: C{-c reject=}.
    @ivar kill: C{-k}.
    @ivar path: C{-d}'s program, as given.
    @ivar args: C{-d}'s arguments (L{None} for the other forms).
    @ivar group: C{-g}.
    @ivar slot: C{-s}.
    @ivar verbosity: C{human} or C{machine} (C{-L}).
    @ivar sections: what C{-L} lists, from C{keepalive} and C{processes}.
    @ivar control: the control socket's absolute path.
    @ivar table: the table file's absolute path.
    @ivar scriptDir: the restart script directory's absolute path.
    """

    action: str
    option: str = ""
    config: str | None = None
    pid: int | None = None
    errorLimit: int | None = None
    matchArgs: bool = False
    downCode: int | None = None
    rejectCode: int | None = None
    kill: bool = False
    path: str | None = None
    args: tuple[str, ...] | None = None
    group: str | None = None
    slot: int | None = None
    verbosity: str = "human"
    sections: tuple[str, ...] = _SECTIONS
    control: str = DEFAULT_CONTROL
    table: str = DEFAULT_TABLE
    scriptDir: str = DEFAULT_SCRIPT_DIR


def _number(text: str, what: str, minimum: int, maximum: int | None = None) -> int:
    if _DIGITS.match(text) and minimum <= int(text) and (maximum is None or int(text) <= maximum):
        return int(text)
    if maximum is not None:
        form = f"an integer from {minimum} to {maximum}"
    elif minimum == 1:
        form = "a positive integer"
    else:
        form = f"an integer of at least {minimum}"
    raise UsageError(f"{what} takes {form}, not {text!r}")


def parse(argv: Sequence[str]) -> Request:
    """
    Read a spawndaemon command line (without the program name).

    Single-letter options may be clustered (C{-ka}) and a value may follow
    its letter directly (C{-n5}); C{-d PATH} takes the rest of the line as
    the program's arguments, C{-R} takes the config file and the pid, and
    C{-v} takes the verbosity and, when the next word is C{processes} or
    C{keepalive}, that word.

    @return: the request; config, table, socket and script directory paths
        made absolute.
    @raise Refusal: a cluster option.
    @raise UsageError: anything else that is not a spawndaemon form.
    """
    words = list(argv)
    values: dict[str, Any] = {}
    action: str | None = None
    chosenBy = ""
    seen: set[str] = set()
    i = 0

    def take(letter: str, rest: str, what: str) -> str:
        nonlocal i
        if rest:
            return rest
        if i >= len(words):
            raise UsageError(f"-{letter} needs {what}")
        i += 1
        return words[i - 1]

    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("--") and len(word) > 2:
            name, equals, value = word[2:].partition("=")
            if name == "help" and not equals:
                return Request("help")
            if name not in _LONG_VALUED:
                raise UsageError(f"unknown option --{name}")
            if not equals:
                if i >= len(words):
                    raise UsageError(f"--{name} needs a path")
                value = words[i]
                i += 1
            if not value:
                raise UsageError(f"--{name} needs a path")
            values[_LONG_VALUED[name]] = os.path.abspath(value)
            continue
        if not word.startswith("-") or word == "-":
            raise UsageError(f"unexpected argument {word!r}")
        j = 1
        while j < len(word):
            letter = word[j]
            j += 1
            if letter in _REFUSED:
                raise Refusal(_REFUSED[letter])
            if letter not in _FLAGS and letter not in _VALUED:
                raise UsageError(f"unknown option -{letter}")
            if letter == "h":
                return Request("help")
            if letter in seen and (letter in _ACTIONS or letter in "nv"):
                raise UsageError(f"-{letter} given twice")
            if letter in _ACTIONS:
                if action is not None:
                    raise UsageError(
                        f"-{letter} cannot go with -{chosenBy}: give one of "
                        "-r -R -d -p -g -s -L -Q -q"
                    )
                action, chosenBy = _ACTIONS[letter], letter
            seen.add(letter)
            if letter in _FLAGS:
                if letter == "a":
                    values["matchArgs"] = True
                elif letter == "k":
                    values["kill"] = True
                continue
            rest, j = word[j:], len(word)
            if letter == "n":
                values["errorLimit"] = _number(
                    take(letter, rest, "a number of failures"), "-n", 1
                )
            elif letter == "c":
                spec = take(letter, rest, "down=CODE or reject=CODE")
                key, equals, code = spec.partition("=")
                if key not in ("down", "reject") or not equals:
                    raise UsageError(f"-c takes down=CODE or reject=CODE, not {spec!r}")
                name = key + "Code"
                if name in values:
                    raise UsageError(f"-c {key}= given twice")
                values[name] = _number(code, f"-c {key}=", 0, 255)
            elif letter in ("r", "R"):
                values["config"] = os.path.abspath(take(letter, rest, "a config file"))
                if letter == "R":
                    if i >= len(words):
                        raise UsageError("-R needs a config file and a pid")
                    values["pid"] = _number(words[i], "-R's pid", 1)
                    i += 1
            elif letter == "d":
                values["path"] = take(letter, rest, "a program's path")
                if not values["path"]:
                    raise UsageError("-d needs a program's path")
                values["args"] = tuple(words[i:])
                i = len(words)
            elif letter == "p":
                values["pid"] = _number(take(letter, rest, "a pid"), "-p", 1)
            elif letter == "g":
                values["group"] = take(letter, rest, "a group name")
                if not values["group"]:
                    raise UsageError("-g needs a group name")
            elif letter == "s":
                values["slot"] = _number(take(letter, rest, "a slot number"), "-s", 1)
            elif letter == "v":
                verbosity = take(letter, rest, "human or machine")
                if verbosity not in ("human", "machine"):
                    raise UsageError(f"-v takes human or machine, not {verbosity!r}")
                values["verbosity"] = verbosity
                if i < len(words) and words[i] in _SECTIONS:
                    values["sections"] = (words[i],)
                    i += 1

    if action is None:
        raise UsageError("no command: give one of -r -R -d -p -g -s -L -Q -q")
    allowed = {
        "n": ("r",),
        "c": ("r",),
        "a": ("r", "R", "d"),
        "k": ("d", "p", "g", "s"),
        "v": ("L",),
    }
    for letter, owners in allowed.items():
        if letter in seen and chosenBy not in owners:
            names = ", ".join(f"-{o}" for o in owners)
            if len(owners) > 1:
                names = names.rsplit(", ", 1)[0] + " or " + f"-{owners[-1]}"
            hint = ""
            if letter == "k" and chosenBy == "Q":
                hint = " (-Q itself stops the processes keepalive started)"
            raise UsageError(f"-{letter} goes only with {names}{hint}")
    return Request(action, option=chosenBy, **values)


# -- listing ------------------------------------------------------------------


def formatUptime(seconds: float) -> str:
    """
    A duration in two units, as C{3d04h}, C{2h05m}, C{4m07s} or C{42s}.
    """
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"




def _epoch(value: float) -> str:
    return f"{value:.3f}" if value else ""


def _failures(record: Any, now: float) -> int:
    probation = record.config.policy.probation
    return sum(1 for t in record.failures if now - t < probation)


def _processFields(record: Any, now: float) -> list[str]:
    cfg = record.config
    return [
        "process",
        str(record.slot),
        str(getattr(record.state, "value", record.state)),
        str(record.pid) if record.pid else "",
        "1" if record.child else "0",
        _epoch(record.started),
        str(record.restarts),
        str(_failures(record, now)),
        record.group or "",
        "1" if record.critical else "0",
        record.lastExit or "",
        record.logPath or "",
        cfg.source,
        cfg.path,
        shlex.join(cfg.args),
    ]





def _humanProcesses(records: Sequence[Any], now: float, width: int | None) -> list[str]:
    if not records:
        return ["no processes in the table"]
    header = ["SLOT", "STATE", "PID", "UPTIME", "RESTARTS", "FAILURES", "GROUP", "COMMAND"]
    right = {0, 2, 4, 5}
    rows = []
    for r in records:
        state = str(getattr(r.state, "value", r.state))
        uptime = formatUptime(now - r.started) if state == "ok" and r.started else "-"
        group = (r.group + ("*" if r.critical else "")) if r.group else "-"
        rows.append([
            str(r.slot),
            state,
            str(r.pid) if r.pid else "-",
            uptime,
            str(r.restarts),
            str(_failures(r, now)),
            printable(group),
            printable(shlex.join(r.config.argv)),
        ])
    widths = [max(len(row[c]) for row in [header] + rows) for c in range(len(header) - 1)]
    lines = []
    for row in [header] + rows:
        cells = [
            row[c].rjust(widths[c]) if c in right else row[c].ljust(widths[c])
            for c in range(len(widths))
        ]
        prefix = "  ".join(cells) + "  "
        command = row[-1]
        if width is not None and len(prefix) + len(command) > width:
            room = max(width - len(prefix), 16)
            if len(command) > room:
                command = command[: room - 1] + "\N{HORIZONTAL ELLIPSIS}"
        lines.append(prefix + command)
    return lines


def _localTime(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


@attrs.frozen
class _KeepaliveState:
    """
    What C{-L} found out about keepalive.

    @ivar running: C{yes}, C{no} or C{unknown}.
    @ivar info: Ping's answer when running.
    @ivar reason: why it is not running or unknown.
    """

    running: str
    info: dict[str, Any] | None = None
    reason: str = ""


def _keepaliveFields(state: _KeepaliveState, request: Request, count: int) -> list[str]:
    info = state.info
    if info is None:
        return ["keepalive", state.running, "", "", request.table, request.control,
                str(count)]
    return [
        "keepalive", "yes", str(info["pid"]), _epoch(info["started"]), info["table"],
        info["control"], str(info["processes"]),
    ]


def _humanKeepalive(
    state: _KeepaliveState, request: Request, count: int, now: float
) -> list[str]:
    fields = _keepaliveFields(state, request, count)
    info = state.info
    if info is not None:
        status = (
            f"running, pid {info['pid']}, since {_localTime(info['started'])} "
            f"(up {formatUptime(now - info['started'])})"
        )
    elif state.running == "no":
        status = state.reason.removeprefix("keepalive is ")
    else:
        status = f"unknown ({state.reason})"
    return [
        f"keepalive: {printable(status)}",
        f"table:     {printable(fields[4])}",
        f"control:   {printable(fields[5])}",
        f"processes: {fields[6]}",
    ]


def _terminalWidth(out: TextIO) -> int | None:
    """
    The width to cut human listings to: C{$COLUMNS}, else the terminal's
    when C{out} is one, else none (a file gets whole lines).
    """
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if out.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


# -- talking to keepalive ---------------------------------------------------------


def _react(work: Callable[[Any], Awaitable[_T]]) -> _T:
    """
    Run C{work(reactor)} with L{twisted.internet.task.react} and give back
    its result or raise its exception.  A process can do this once.
    """
    from twisted.internet import task

    outcome: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        try:
            outcome["value"] = await work(reactor)
        except BaseException as e:
            outcome["error"] = e

    try:
        task.react(run)
    except SystemExit:
        pass
    if "error" in outcome:
        raise outcome["error"]
    if "value" in outcome:
        return outcome["value"]
    raise KeepaliveError("interrupted before keepalive answered")


async def _ping(reactor: Any, control: str) -> dict[str, Any]:
    from twisted.internet import defer

    d = call(control, Ping, reactor)
    d.addTimeout(PING_TIMEOUT, reactor)
    try:
        return await d
    except defer.TimeoutError:
        raise KeepaliveError(
            f"keepalive did not answer within {PING_TIMEOUT:g} s on {control}"
        ) from None


def _remote(request: Request, command: type, **kw: Any) -> dict[str, Any]:
    return _react(lambda reactor: call(request.control, command, reactor, **kw))


def _program(path: str) -> str:
    """
    C{-d}'s program as an absolute path: a bare name is looked up in
    C{$PATH}, as config files do.
    """
    if "/" in path:
        return os.path.abspath(path)
    found = shutil.which(path)
    if found is None:
        raise BadRequest(
            f"-d {path}: no such program in PATH; give the full pathname as "
            "spawndaemon -L shows it"
        )
    return os.path.abspath(found)


def _slotList(slots: Sequence[int]) -> str:
    if not slots:
        return "no slots"
    if len(slots) == 1:
        return f"slot {slots[0]}"
    return "slots " + ", ".join(str(s) for s in slots)


def _list(request: Request, out: TextIO, err: TextIO) -> int:
    table = Table(request.table, readonly=True)
    try:
        records = table.load()
    finally:
        table.close()
    state = _KeepaliveState("no")
    if "keepalive" in request.sections:
        try:
            info = _react(lambda reactor: _ping(reactor, request.control))
        except KeepaliveNotRunning as e:
            if isinstance(e, ControlPermissionDenied):
                state = _KeepaliveState("unknown", reason=str(e))
            else:
                state = _KeepaliveState("no", reason=str(e))
        except KeepaliveError as e:
            state = _KeepaliveState("unknown", reason=str(e))
        else:
            state = _KeepaliveState("yes", info=info)
            if os.path.abspath(info["table"]) != request.table:
                print(
                    f"spawndaemon: note: keepalive uses the table {info['table']}; "
                    f"this lists {request.table}",
                    file=err,
                )
        if state.running == "unknown":
            print(f"spawndaemon: {state.reason}", file=err)
    now = time.time()
    lines: list[str] = []
    if request.verbosity == "machine":
        if "keepalive" in request.sections:
            lines.append(machineLine(_keepaliveFields(state, request, len(records))))
        if "processes" in request.sections:
            lines.extend(machineLine(_processFields(r, now)) for r in records)
    else:
        if "keepalive" in request.sections:
            lines.extend(_humanKeepalive(state, request, len(records), now))
            if "processes" in request.sections:
                lines.append("")
        if "processes" in request.sections:
            lines.extend(_humanProcesses(records, now, _terminalWidth(out)))
    for line in lines:
        out.write(line + "\n")
    out.flush()
    return 0


def _perform(request: Request, out: TextIO, err: TextIO) -> int:
    if request.action == "list":
        return _list(request, out, err)
    if request.action == "query":
        try:
            _react(lambda reactor: _ping(reactor, request.control))
        except KeepaliveError:
            return 1
        return 0
    if request.action == "quit":
        answer = _remote(request, Quit)
        stopped = answer["stopped"]
        if stopped:
            out.write(f"keepalive is stopping; it stopped the processes in {_slotList(stopped)}\n")
        else:
            out.write("keepalive is stopping; it had no processes of its own to stop\n")
        return 0
    if request.action in ("register", "adopt"):
        assert request.config is not None
        loaded = kaconfig.load(
            request.config, scriptDir=request.scriptDir, errorLimit=request.errorLimit
        )
        if request.action == "adopt":
            if isinstance(loaded, kaconfig.GroupConfig):
                raise BadRequest(
                    f"-R takes a process config file; {request.config} is a group file"
                )
            answer = _remote(
                request, Adopt, config=request.config, pid=request.pid,
                matchArgs=request.matchArgs,
            )
            out.write(f"adopted pid {request.pid} in slot {answer['slot']}: {request.config}\n")
            return 0
        answer = _remote(
            request, Register, config=request.config, errorLimit=request.errorLimit,
            matchArgs=request.matchArgs, downCode=request.downCode,
            rejectCode=request.rejectCode,
        )
        what = (
            f"group {loaded.name} ({request.config})"
            if isinstance(loaded, kaconfig.GroupConfig) else request.config
        )
        out.write(f"registered {what}: {_slotList(answer['slots'])}\n")
        return 0
    # unregister
    selector: dict[str, Any] = {}
    if request.option == "d":
        assert request.path is not None
        selector = dict(path=_program(request.path), args=list(request.args or ()))
    elif request.option == "p":
        selector = dict(pid=request.pid)
    elif request.option == "g":
        selector = dict(group=request.group)
    else:
        selector = dict(slot=request.slot)
    answer = _remote(
        request, Unregister, kill=request.kill, matchArgs=request.matchArgs, **selector
    )
    verb = "unregistered and stopped" if request.kill else "unregistered"
    out.write(f"{verb} {_slotList(answer['slots'])}\n")
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """
    Run spawndaemon.

    @param argv: the arguments (without the program name); default
        C{sys.argv[1:]}.
    @param out: where listings and results go (default stdout).
    @param err: where errors go (default stderr).
    @return: the exit status: 0 done, 1 keepalive (or a config file, or the
        table) said no or is not there, 2 usage error or cluster option.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        request = parse(words)
    except Refusal as e:
        print(f"spawndaemon: {e}", file=err)
        return 2
    except UsageError as e:
        print(f"spawndaemon: {e}", file=err)
        err.write(USAGE)
        err.write("Try 'spawndaemon --help' for the forms and exit statuses.\n")
        return 2
    if request.action == "help":
        out.write(HELP)
        return 0
    try:
        return _perform(request, out, err)
    except KeepaliveError as e:
        print(f"spawndaemon: {e}", file=err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
