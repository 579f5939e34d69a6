"""
The watchdog daemon's result codes (the 5.14+ values).

Checks, test programs and repair programs report one number: 0 for
healthy, one of the watchdog's own codes from 245 up, or an errno value
(ENOMEM 12, ENETUNREACH 101, ...).  Test and repair programs see these
numbers as arguments and return them as exit codes, so they are part of the
interface with the operator's scripts and must not change.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "ECHKILL",
    "EDONTKNOW",
    "EINVMEM",
    "EMAXLOAD",
    "ENOCHANGE",
    "ENOERR",
    "ENOLOAD",
    "EREBOOT",
    "ERESET",
    "ETOOHOT",
    "ETOOLONG",
    "EUSERVALUE",
    "NOT_REPAIRABLE",
    "describe",
]

ENOERR = 0
EREBOOT = 255
ERESET = 254
EMAXLOAD = 253
ETOOHOT = 252
ENOLOAD = 251
ENOCHANGE = 250
EINVMEM = 249
ECHKILL = 248
ETOOLONG = 247
EUSERVALUE = 246
EDONTKNOW = 245

_TEXTS = {
    ENOERR: "no error",
    EREBOOT: "unconditional reboot requested",
    ERESET: "unconditional hard reset requested",
    EMAXLOAD: "load average too high",
    ETOOHOT: "too hot",
    ENOLOAD: "loadavg contains no data",
    ENOCHANGE: "file was not changed in the given interval",
    EINVMEM: "meminfo contains invalid data",
    ECHKILL: "child process was killed by signal",
    ETOOLONG: "child process did not return in time",
    EUSERVALUE: "user-reserved code",
    EDONTKNOW: "unknown (neither good nor bad)",
}

#: Codes that go straight to the shutdown decision: no retry timer, no
#: repair.
NOT_REPAIRABLE = frozenset({EREBOOT, ERESET, ETOOHOT, errno.ENOMEM})


def describe(code: int) -> str:
    """
    The text for C{code}, as the original's C{wd_strerror}: the watchdog's
    own text for its codes, C{strerror} for errno values.
    """
    if code in _TEXTS:
        return _TEXTS[code]
    try:
        return os.strerror(code)
    except (ValueError, OverflowError):
        return f"unknown error {code}"
