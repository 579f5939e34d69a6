"""
The ini file of C{conf/sysmon.tac}: sections of C{key = value} lines, each
line remembered with its number so that every error can name the file,
the line, the section and the key.

The format is the common ini subset, and nothing more::

    # a comment (also ; at the start of a line)
    [netdump]
    enabled = yes
    dumpdir = var/crash

Keys are case-insensitive and C{_} is the same as C{-} (C{space_check} is
C{space-check}).  A key may be repeated, for options that may be given
more than once (C{master} of sendstats).  Values run to the end of the
line, without surrounding white space; there is no quoting, no
interpolation and no continuation line, so what is written is what the
daemon's option gets.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["Entry", "IniError", "Section", "parse", "read", "truth"]

_SECTION = re.compile(r"\[\s*([A-Za-z0-9_.-]+)\s*\]\s*\Z")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

_TRUE = frozenset({"yes", "true", "on", "1"})
_FALSE = frozenset({"no", "false", "off", "0"})


class IniError(ValueError):
    """
    A line of the ini file is wrong; C{str()} names the file, line, section
    and key: C{conf/sysmon.ini:12: [netdump] port: ...}.
    """

    def __init__(self, path: str, line: int | None, message: str,
                 section: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.message = message
        self.section = section
        self.key = key

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = ""
        if self.section is not None:
            what = f" [{self.section}]" + (f" {self.key}" if self.key else "")
        return f"{where}:{what}: {self.message}" if what else f"{where}: {self.message}"


@attrs.frozen
class Entry:
    """
    One C{key = value} line.

    @ivar key: the key, lower case, C{_} made C{-}.
    @ivar value: the text after C{=}, stripped.
    @ivar line: its line number (1-based).
    """

    key: str
    value: str
    line: int


@attrs.define
class Section:
    """
    One C{[name]} section and its lines, in file order.
    """

    name: str
    line: int
    path: str
    entries: list[Entry] = attrs.Factory(list)

    def error(self, message: str, entry: Entry | None = None) -> IniError:
        """
        An L{IniError} at C{entry}'s line (or the section's header).
        """
        return IniError(self.path, entry.line if entry else self.line, message,
                        section=self.name, key=entry.key if entry else None)

    def get(self, key: str) -> Entry | None:
        """
        The last line setting C{key}, or L{None}.
        """
        found = [e for e in self.entries if e.key == key]
        return found[-1] if found else None

    def take(self, key: str) -> Entry | None:
        """
        Remove every line setting C{key} and return the last one (or L{None}):
        for keys the tac itself handles (C{enabled}), so that they are not
        passed on to the daemon.
        """
        found = self.get(key)
        self.entries = [e for e in self.entries if e.key != key]
        return found

    def flag(self, key: str, default: bool) -> bool:
        """
        A yes/no key, removed from the section; L{IniError} for any other
        value.
        """
        entry = self.take(key)
        if entry is None:
            return default
        try:
            return truth(entry.value)
        except ValueError as e:
            raise self.error(str(e), entry)


def truth(text: str) -> bool:
    """
    C{yes/no}, C{true/false}, C{on/off}, C{1/0}, in any case.

    @raise ValueError: anything else.
    """
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not yes or no (also true/false, on/off, 1/0)")


def parse(text: str, path: str = "<ini>") -> list[Section]:
    """
    The sections of an ini text, in order.

    @raise IniError: a line that is neither a comment, a section header nor
        C{key = value}; a key before the first section; a section given
        twice.
    """
    sections: list[Section] = []
    seen: dict[str, int] = {}
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                raise IniError(path, number, f"bad section header {line!r}: expected [name]")
            name = match.group(1).lower()
            if name in seen:
                raise IniError(path, number, f"section [{name}] is already at line {seen[name]}")
            seen[name] = number
            current = Section(name, number, path)
            sections.append(current)
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not _KEY.match(key):
            raise IniError(path, number, f"expected 'key = value' or '[section]', not {line!r}",
                           section=current.name if current else None)
        if current is None:
            raise IniError(path, number, f"{key} is not in a section: put [name] above it")
        current.entries.append(Entry(key.lower().replace("_", "-"), value.strip(), number))
    return sections


def read(path: str) -> list[Section]:
    """
    L{parse} the file at C{path}.

    @raise IniError: it cannot be read, or L{parse} refuses it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise IniError(path, None, f"cannot read it: {e.strerror}")
    except UnicodeDecodeError as e:
        raise IniError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})")
    return parse(text, path)
