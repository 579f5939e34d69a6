"""
C{sysmon-hosts}: the host directory from the command line, for operators
debugging it (console script C{sysmon-hosts = sysmon.directory.cli:main}).

It reads the same sources the daemons read -- an LDAP server
(L{sysmon.directory.ldap}, its settings file and/or a URL) or a hosts file
(L{sysmon.directory.file}) -- and looks one host up, lists every host, or
checks that the directory can be used and says why not.  It runs no reactor:
L{sysmon.directory.ldap.LDAPClient} is synchronous.  The forms, the output
and the exit statuses are in L{HELP} (C{sysmon-hosts --help}).

Machine format (C{--machine}): one host per line, four fields separated by
a tab::

    1  name     the host name
    2  address  its IP address, normalized (::1, not 0:0::1)
    3  node     its cluster node number, or -
    4  magic    its netdump magic as 16 lower-case hex digits, or -

A missing or empty value is C{-}; a value that is C{-} itself is written
C{\\-}; a tab, newline, carriage return and backslash in a value are
written C{\\t}, C{\\n}, C{\\r} and C{\\\\} (as C{spawndaemon -L -v
machine} does).  Fields may be added at the end later.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Callable, Iterable, Sequence, TextIO, TypeVar

import attrs

from sysmon.directory import (
    DirectoryError,
    DirectoryUnavailable,
    HostRecord,
    normalizeAddress,
)
from sysmon.directory.ldap import DEFAULT_CONFIG, LDAPClient, LDAPSettings, loadSettings
from sysmon.listing import machineLine, printable

__all__ = ["HELP", "Request", "USAGE", "UsageError", "main", "parse"]

USAGE = """\
usage: sysmon-hosts [SOURCE] lookup [--machine] [--by address|name|node] KEY
       sysmon-hosts [SOURCE] list [--machine]
       sysmon-hosts [SOURCE] check
       sysmon-hosts -h | --help
  SOURCE: --directory URL and/or --directory-config FILE (LDAP), or --hosts FILE
"""

HELP = (
    "sysmon-hosts: look hosts up in sysmon's host directory (LDAP or a hosts file),\n"
    "list them, or check that the directory can be used.\n\n"
    + USAGE
    + f"""
Sources (options may come before or after the command):
  --directory URL          the LDAP server, ldap://HOST[:PORT] or
                           ldaps://HOST[:PORT]; the base DN may be the URL's
                           path (ldap://ldap.example/ou=hosts,dc=example);
                           overrides the settings file's url (and base)
  --directory-config FILE  the directory settings file (url, base, bind_dn,
                           password_file, starttls, ca_file, filter, map.*,
                           timeout ...; see conf/ldap/directory.conf)
  --hosts FILE             a hosts file (docs/hosts-file.md) instead of LDAP
  With none of them, the settings file {DEFAULT_CONFIG} is used
  if it exists.  --directory alone does not read that file: give
  --directory-config too to take the bind DN and password from it.
  --hosts cannot go with --directory or --directory-config.

Commands:
  lookup KEY   show one host: name, address, node, magic and its other
               attributes (LDAP: its entry's dn).  KEY is an IP
               address (looked up by address, IPv6 normalized), else a
               number (by node number), else a host name; --by
               address|name|node says which.
  list         every host, in the directory's order (the file's order for
               --hosts): a header and aligned columns NAME ADDRESS NODE
               MAGIC, or "no hosts" (on stdout) when there are none.  An
               empty directory is not an error: exit status 0 (--machine
               prints nothing).  Entries that cannot be read as hosts are
               left out, each named on stderr with the reason.
  check        connect and bind and count the hosts the search sees, and
               print the URL, security (ldaps, StartTLS or none), who it is
               bound as, the base DN, the hosts visible, the entries skipped
               and why, and the round trip in seconds.  When it sees no hosts
               it says so on stderr (an anonymous bind usually sees nothing:
               set bind_dn and password_file).  For --hosts: reads the file
               and prints the number of hosts.

Options:
  --machine    (lookup, list) one tab-separated line per host:
                 name  address  node  magic
               node and magic are "-" when missing; magic is 16 lower-case
               hex digits; a value that is "-" itself is written "\\-"; tab,
               newline, carriage return and backslash are written \\t \\n \\r
               \\\\.  Fields may be added at the end later.
  --by FIELD   (lookup) look KEY up by address, name or node
  -h, --help   this text

Errors go to stderr as one line starting with "sysmon-hosts: ": the server
cannot be reached or did not answer within the timeout, invalid credentials,
an untrusted certificate, no such base DN, a bad settings or hosts file line
(file:line).  A "note:" line may follow with what to try (a server often
hides the base from an anonymous bind, which then reads "does not exist").

Exit status:
  0  done (lookup: the host was found)
  1  lookup: no such host ("unknown host KEY"); or the directory cannot be
     used (the reason on stderr)
  2  usage error
"""
)

_COMMANDS = ("lookup", "list", "check")
_FIELDS = ("address", "name", "node")
_DIGITS = re.compile(r"[0-9]+\Z")
_NODE_MAX = 2**31 - 1
_T = TypeVar("_T")


class UsageError(Exception):
    """
    The command line is not one of sysmon-hosts' forms; C{str()} says why.
    """


@attrs.frozen
class Request:
    """
    What a command line asks for.

    @ivar command: C{lookup}, C{list}, C{check} or C{help}.
    @ivar field: what C{lookup} looks up by: C{address}, C{name} or C{node}.
    @ivar value: what it looks for: a normalized address, a name or a node
        number.
    @ivar key: the KEY as given, for messages.
    @ivar machine: C{--machine}.
    @ivar url: C{--directory}.
    @ivar configFile: the directory settings file: C{--directory-config},
        or L{sysmon.directory.ldap.DEFAULT_CONFIG} when no source was given
        and it exists.
    @ivar hostsFile: C{--hosts}.
    """

    command: str
    field: str | None = None
    value: str | int | None = None
    key: str | None = None
    machine: bool = False
    url: str | None = None
    configFile: str | None = None
    hostsFile: str | None = None


class _Parser(argparse.ArgumentParser):
    """
    An L{argparse.ArgumentParser} that raises L{UsageError} instead of
    printing its own usage and exiting.
    """

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> _Parser:
    p = _Parser(prog="sysmon-hosts", add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--directory", metavar="URL")
    p.add_argument("--directory-config", metavar="FILE", dest="configFile")
    p.add_argument("--hosts", metavar="FILE", dest="hostsFile")
    p.add_argument("--machine", action="store_true")
    p.add_argument("--by", metavar="FIELD")
    p.add_argument("words", nargs="*")
    return p


def _classify(key: str, by: str | None) -> tuple[str, str | int]:
    """
    What C{lookup KEY} looks up by, and the value to look for.
    """
    if by in (None, "address"):
        try:
            return "address", normalizeAddress(key)
        except ValueError:
            if by == "address":
                raise UsageError(f"--by address: {key!r} is not an IP address") from None
    if by in (None, "node") and _DIGITS.match(key) and int(key) <= _NODE_MAX:
        return "node", int(key)
    if by == "node":
        raise UsageError(f"--by node: {key!r} is not a node number (0 to {_NODE_MAX})")
    if not key:
        raise UsageError("lookup needs a host name, address or node number, not ''")
    return "name", key


def parse(argv: Sequence[str], defaultConfig: str = DEFAULT_CONFIG) -> Request:
    """
    Read a sysmon-hosts command line (without the program name).

    @param defaultConfig: the settings file used when no source is given,
        if it exists.
    @raise UsageError: it is not one of the forms.
    """
    args = _parser().parse_intermixed_args(list(argv))
    if args.help:
        return Request("help")
    words = args.words
    if not words:
        raise UsageError("no command: give lookup KEY, list or check")
    command, rest = words[0], words[1:]
    if command not in _COMMANDS:
        raise UsageError(f"unknown command {command!r}: give lookup KEY, list or check")
    if command == "lookup":
        if len(rest) != 1:
            raise UsageError(
                "lookup needs one KEY (an address, node number or name)"
                if not rest else f"lookup takes one KEY, not {len(rest)}"
            )
    elif rest:
        raise UsageError(f"{command} takes no arguments, not {rest[0]!r}")
    if args.machine and command == "check":
        raise UsageError("--machine goes only with lookup and list")
    if args.by is not None:
        if command != "lookup":
            raise UsageError("--by goes only with lookup")
        if args.by not in _FIELDS:
            raise UsageError(f"--by takes address, name or node, not {args.by!r}")
    for option, value in (
        ("--directory", args.directory),
        ("--directory-config", args.configFile),
        ("--hosts", args.hostsFile),
    ):
        if value == "":
            raise UsageError(f"{option} needs a non-empty value")
    ldap = args.directory is not None or args.configFile is not None
    configFile = args.configFile
    if ldap and args.hostsFile is not None:
        raise UsageError(
            "--hosts cannot go with --directory or --directory-config: give one source"
        )
    if not ldap and args.hostsFile is None:
        if not os.path.exists(defaultConfig):
            raise UsageError(
                f"no directory: give --directory URL, --directory-config FILE or "
                f"--hosts FILE ({defaultConfig} does not exist)"
            )
        configFile = defaultConfig
    field = value = key = None
    if command == "lookup":
        key = rest[0]
        field, value = _classify(key, args.by)
    return Request(
        command, field=field, value=value, key=key, machine=args.machine,
        url=args.directory, configFile=configFile, hostsFile=args.hostsFile,
    )


# -- output ---------------------------------------------------------------------





def _fields(record: HostRecord) -> list[str]:
    """
    name, address, node and magic as text, C{""} for a missing one.
    """
    return [
        record.name,
        record.address,
        "" if record.node is None else str(record.node),
        "" if record.magic is None else f"{record.magic:016x}",
    ]


def _humanRecord(record: HostRecord) -> list[str]:
    rows = list(zip(("name", "address", "node", "magic"), _fields(record)))
    rows += sorted(record.attributes.items())
    width = max(len(printable(k)) for k, _ in rows) + 1
    return [f"{(printable(k) + ':').ljust(width)}  {printable(v) or '-'}" for k, v in rows]


def _humanList(records: Sequence[HostRecord]) -> list[str]:
    header = ["NAME", "ADDRESS", "NODE", "MAGIC"]
    rows = [[printable(f) or "-" for f in _fields(r)] for r in records]
    widths = [max(len(row[c]) for row in [header] + rows) for c in range(len(header))]
    return [
        "  ".join(
            row[c].rjust(widths[c]) if c == 2 else row[c].ljust(widths[c])
            for c in range(len(header))
        ).rstrip()
        for row in [header] + rows
    ]


# -- sources --------------------------------------------------------------------


class _HostsFile:
    """
    A hosts file, read once.
    """

    def __init__(self, path: str) -> None:
        from sysmon.directory.file import parseHosts

        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                self.records = parseHosts(f, path)
        except UnicodeDecodeError as e:
            raise DirectoryError(f"{path}: not UTF-8 text ({e.reason})") from None
        except OSError as e:
            raise DirectoryError(
                f"{path}: cannot read hosts file: {e.strerror or e}"
            ) from None

    def describe(self) -> str:
        return self.path

    def lookup(self, field: str, value: str | int) -> HostRecord | None:
        for record in self.records:
            if getattr(record, field) == value:
                return record
        return None

    def hosts(self) -> list[HostRecord]:
        return list(self.records)

    def check(self, out: TextIO, err: TextIO) -> None:
        count = len(self.records)
        out.write(f"hosts file: {printable(self.path)}\n")
        out.write(f"hosts:      {count}\n")
        if not count:
            err.write(f"sysmon-hosts: warning: {printable(self.path)} holds no hosts\n")

    def skipped(self) -> list[str]:
        return []

    def noHostsHint(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class _SearchRefused(DirectoryError):
    """
    The server took the bind but its search failed; C{note} says what may
    help.
    """

    def __init__(self, error: DirectoryError, note: str) -> None:
        super().__init__(str(error))
        self.note = note


_ANONYMOUS = "set bind_dn/password_file?"


class _Directory:
    """
    An LDAP server, through one L{sysmon.directory.ldap.LDAPClient}.

    Every command connects and binds first, on its own, so that a search
    that fails after a good bind can be told from a server that cannot be
    reached or refuses the bind: only then is an anonymous bind the likely
    cause (servers hide the base itself from anonymous, so the search says
    "does not exist").
    """

    def __init__(self, settings: LDAPSettings, client: LDAPClient) -> None:
        self.settings = settings
        self.client = client

    def describe(self) -> str:
        return f"{self.settings.url} under {self.settings.base}"

    def _search(self, question: Callable[..., _T], *args: Any) -> _T:
        self.client.connect()
        try:
            return question(*args)
        except DirectoryUnavailable:
            raise
        except DirectoryError as e:
            if self.settings.bindDN is None:
                raise _SearchRefused(
                    e, "bound anonymously; the server may hide the base and its hosts "
                    "from anonymous binds: " + _ANONYMOUS
                ) from None
            raise

    def lookup(self, field: str, value: str | int) -> HostRecord | None:
        return self._search(self.client.lookup, field, value)

    def hosts(self) -> list[HostRecord]:
        return self._search(self.client.hosts)

    def check(self, out: TextIO, err: TextIO) -> None:
        check = self._search(self.client.check)
        security = check.security
        if security != "none":
            security += f" (CA file {self.settings.caFile})" if self.settings.caFile else (
                " (the system's CAs)"
            )
        lines = [
            ("url", check.url),
            ("security", security),
            ("bound as", check.boundAs),
            ("base", check.base),
            ("filter", self.settings.filter),
            ("hosts", str(check.hosts)),
            ("skipped", str(len(check.skipped))),
        ]
        for label, value in lines:
            out.write(f"{label + ':':<12} {printable(str(value))}\n")
        for reason in check.skipped:
            out.write(f"  {printable(reason)}\n")
        out.write(f"{'round trip:':<12} {check.seconds:.3f} s\n")
        if check.hosts == 0:
            if check.boundAs == "anonymous":
                err.write(
                    f"sysmon-hosts: warning: anonymous sees no hosts: {_ANONYMOUS}\n"
                )
            else:
                err.write(
                    f"sysmon-hosts: warning: {printable(check.boundAs)} sees no hosts "
                    f"under {printable(check.base)} with {printable(self.settings.filter)}"
                    ": check base, filter and its read access\n"
                )

    def skipped(self) -> list[str]:
        return list(self.client.skipped)

    def noHostsHint(self) -> str | None:
        if self.settings.bindDN is None:
            return "bound anonymously, which may see no hosts: " + _ANONYMOUS
        return None

    def close(self) -> None:
        self.client.close()


def _open(request: Request) -> _HostsFile | _Directory:
    if request.hostsFile is not None:
        return _HostsFile(request.hostsFile)
    settings = loadSettings(request.url, request.configFile)
    return _Directory(settings, LDAPClient(settings))


def _write(out: TextIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(line + "\n")


def _perform(request: Request, out: TextIO, err: TextIO) -> int:
    source = _open(request)
    try:
        if request.command == "check":
            source.check(out, err)
            return 0
        if request.command == "list":
            records = source.hosts()
            if request.machine:
                _write(out, (machineLine(_fields(r)) for r in records))
            elif records:
                _write(out, _humanList(records))
            else:
                out.write(f"no hosts in {printable(source.describe())}\n")
            for reason in source.skipped():
                err.write(f"sysmon-hosts: warning: skipped {printable(reason)}\n")
            hint = source.noHostsHint()
            if not records and hint:
                err.write(f"sysmon-hosts: note: {hint}\n")
            return 0
        assert request.field is not None and request.value is not None
        record = source.lookup(request.field, request.value)
        if record is None:
            err.write(f"sysmon-hosts: unknown host {printable(request.key or '')}\n")
            hint = source.noHostsHint()
            if hint:
                err.write(f"sysmon-hosts: note: {hint}\n")
            return 1
        _write(out, [machineLine(_fields(record))] if request.machine else _humanRecord(record))
        return 0
    finally:
        source.close()


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """
    Run sysmon-hosts.

    @param argv: the arguments (without the program name); default
        C{sys.argv[1:]}.
    @param out: where records, listings and check results go (default
        stdout).
    @param err: where errors, warnings and notes go (default stderr).
    @return: the exit status: 0 done, 1 unknown host or the directory
        cannot be used, 2 usage error.
    """
    toStdout = out is None
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        request = parse(words)
    except UsageError as e:
        err.write(f"sysmon-hosts: {e}\n")
        err.write(USAGE)
        err.write("Try 'sysmon-hosts --help' for the sources, commands and exit statuses.\n")
        return 2
    if request.command == "help":
        out.write(HELP)
        return 0
    try:
        status = _perform(request, out, err)
        out.flush()
        return status
    except DirectoryError as e:
        err.write(f"sysmon-hosts: {e}\n")
        if isinstance(e, _SearchRefused):
            err.write(f"sysmon-hosts: note: {e.note}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (sysmon-hosts list | head): not an error to
        # report, but stdout must not be flushed again at exit.
        if toStdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
