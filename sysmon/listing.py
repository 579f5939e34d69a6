"""
Text for operators' command-line listings, shared by C{spawndaemon} and
C{sysmon-hosts}.

Two forms:

  - I{human}: L{printable} shows control characters as escapes, so nothing
    a table or a directory holds can move the terminal's cursor;
  - I{machine}: L{machineLine} joins fields with tabs, one record per line.
    An empty field is C{-}; a literal C{-} is C{\\-}; backslash, tab,
    newline and carriage return are C{\\\\}, C{\\t}, C{\\n}, C{\\r}.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["machineField", "machineLine", "printable"]

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def printable(text: str) -> str:
    """
    C{text} with control characters shown as escapes (C{\\n}, C{\\x1b}).
    """
    return _UNPRINTABLE.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def machineField(value: str) -> str:
    """
    One field of a machine-readable line, escaped.
    """
    if value == "":
        return "-"
    if value == "-":
        return "\\-"
    return (
        value.replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def machineLine(fields: Iterable[str]) -> str:
    """
    A machine-readable line: the escaped fields joined by tabs.
    """
    return "\t".join(machineField(f) for f in fields)
