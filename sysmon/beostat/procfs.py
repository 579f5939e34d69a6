"""
Parsers for the C{/proc} files that sendstats reports, and L{readSnapshot},
which reads them all under a configurable root.

The C{parse...} functions are pure: they take a file's text and return the
typed records of L{sysmon.beostat.records}, or raise L{ProcfsError}, the
only exception they raise, whatever the text.  They tolerate what newer
kernels add (extra fields on a line, extra lines, extra columns) and what
older ones leave out where a sensible value exists (the later C{/proc/stat}
counters, C{MemAvailable}, C{cpu MHz}).

L{readSnapshot} fails per file: a file that is missing, unreadable or
malformed gives L{None} for its part of the L{Snapshot} and a
C{(path, reason)} entry in its C{errors}; the other parts are still read.

Text is the file's bytes decoded as UTF-8 with C{surrogateescape}, so
C{name.encode("utf-8", "surrogateescape")} gives back an interface's exact
bytes (Linux allows any byte but C{/}, C{:} and white space in a name).

sendstats calls L{readSnapshot} every second, on machines with hundreds of
CPUs: the parsers look only at the lines they need (C{str.startswith} with a
tuple of prefixes, C{str.split}) and use no regular expressions.
"""

from __future__ import annotations

import math
import os
from typing import Callable, TypeVar

from sysmon.beostat.records import (
    CPU_TICK_FIELDS,
    IFNAMSIZ,
    CpuInfo,
    CpuTicks,
    FileSystem,
    Interface,
    Load,
    Memory,
    Snapshot,
)

__all__ = [
    "MAX_CPUS",
    "ProcfsError",
    "parseCpuinfo",
    "parseLoadavg",
    "parseMeminfo",
    "parseNetDev",
    "parseStat",
    "readSnapshot",
    "statfs",
]

#: The largest counter a kernel prints (they are C{u64}); anything bigger
#: means a malformed file, and would not fit the wire format.
_U64 = (1 << 64) - 1

#: The highest C{cpuN} number accepted in C{/proc/stat} plus one (Linux's
#: C{CONFIG_NR_CPUS} goes up to 8192); a bigger N means a malformed file.
MAX_CPUS = 65536

_T = TypeVar("_T")
_ZERO_TICKS = CpuTicks()
_TICKS = len(CPU_TICK_FIELDS)


class ProcfsError(ValueError):
    """
    A C{/proc} file is not in the format the parser knows.

    @ivar path: the file (as the caller named it, C{/proc/...} by default).
    @ivar reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _show(text: str, limit: int = 40) -> str:
    """
    C{text} quoted for an error message, cut short when long.
    """
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def _unsigned(text: str, path: str, what: str) -> int:
    """
    A kernel counter: ASCII decimal digits, at most C{2**64 - 1}.

    @raise ProcfsError: it is not.
    """
    if text.isascii() and text.isdigit():
        try:
            value = int(text)
        except ValueError:  # more digits than int() accepts
            pass
        else:
            if value <= _U64:
                return value
    raise ProcfsError(path, f"{what}: not a counter: {_show(text)}")


def _real(text: str, path: str, what: str) -> float:
    """
    A non-negative finite decimal number (a load, a clock rate).

    @raise ProcfsError: it is not.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0 and text.isascii()):
        raise ProcfsError(path, f"{what}: not a number: {_show(text)}")
    return value


# -- /proc/cpuinfo ---------------------------------------------------------------

#: The keys C{parseCpuinfo} looks at, by the start of their lines.
_CPUINFO_PREFIXES = ("processor", "Processor", "model name", "cpu", "clock", "ncpus", "#",
                     "uarch")

#: Where the model name is, by architecture, best first: x86, arm and most
#: others; MIPS; 32-bit ARM before 3.8; PowerPC, Alpha and SPARC; RISC-V.
#: arm64 kernels give none (only C{CPU implementer}/C{CPU part} numbers): "".
_MODEL_KEYS = ("model name", "cpu model", "Processor", "cpu", "uarch")

#: Where the count is on architectures with no C{processor} lines: SPARC,
#: Alpha, s390 before 4.x.
_COUNT_KEYS = ("ncpus active", "cpus active", "# processors")


def parseCpuinfo(text: str, path: str = "/proc/cpuinfo") -> CpuInfo:
    """
    Parse C{/proc/cpuinfo}.

    The count is the number of C{processor} entries: C{processor : N} lines
    (x86, arm, arm64, PowerPC, MIPS, RISC-V ...) or C{processor N: ...}
    lines (s390).  Without any, it is taken from C{ncpus active} (SPARC),
    C{cpus active} (Alpha) or C{# processors} (s390), and a uniprocessor
    32-bit ARM kernel's lone C{Processor : ...} line counts as one.

    The clock is the first C{cpu MHz} (x86 and others); else PowerPC's
    C{clock : 3425.000000MHz}, s390's C{cpu MHz dynamic}; else 0.0, as on
    ARM, whose kernels do not say.

    The model is the first C{model name}, else C{cpu model}, C{Processor}
    C{cpu} or C{uarch} (see L{_MODEL_KEYS}), stripped; "" when there is
    none (arm64, s390).

    @param path: the file's name, for error messages.
    @raise ProcfsError: no processor is listed, or C{cpu MHz} is not a number.
    """
    count = 0
    firsts: dict[str, str] = {}
    for line in text.split("\n"):
        if not line.startswith(_CPUINFO_PREFIXES):
            continue
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key = key.rstrip()
        if key == "processor":
            count += 1
            continue
        words = key.split()
        if len(words) == 2 and words[0] == "processor" and words[1].isdigit():
            count += 1  # s390: "processor 0: version = FF, ..."
            continue
        if key not in firsts:
            firsts[key] = value.strip()

    if count == 0:
        for key in _COUNT_KEYS:
            if key in firsts:
                value = firsts[key]
                if value.isascii() and value.isdigit() and len(value) < 10:
                    count = int(value)
                break
        else:
            if "Processor" in firsts:
                count = 1
        if count <= 0:
            raise ProcfsError(path, "no processor listed")

    mhz = 0.0
    if "cpu MHz" in firsts:
        mhz = _real(firsts["cpu MHz"], path, "cpu MHz")
    else:
        # Less certain sources: a value that is not a number is ignored.
        for key, suffix in (("clock", "MHz"), ("cpu MHz dynamic", "")):
            value = firsts.get(key)
            if value is not None:
                if suffix and value.endswith(suffix):
                    value = value[: -len(suffix)]
                try:
                    mhz = _real(value, path, key)
                except ProcfsError:
                    pass
                break

    model = ""
    for key in _MODEL_KEYS:
        if key in firsts:
            model = firsts[key]
            break
    return CpuInfo(count=count, mhz=mhz, model=model)


# -- /proc/meminfo ----------------------------------------------------------------

#: The C{/proc/meminfo} keys carried, and the L{Memory} attributes they fill.
_MEMINFO_KEYS = {
    "MemTotal": "total",
    "MemFree": "free",
    "MemAvailable": "available",
    "Buffers": "buffers",
    "Cached": "cached",
    "SwapTotal": "swapTotal",
    "SwapFree": "swapFree",
}
_MEMINFO_PREFIXES = tuple(_MEMINFO_KEYS)


def parseMeminfo(text: str, path: str = "/proc/meminfo") -> Memory:
    """
    Parse C{/proc/meminfo}: the figures of L{Memory}, in bytes (the file
    gives kB: 1024 bytes).

    Other lines, and 2.4 kernels' leading table, are ignored; of a key given
    twice, the first counts.  A missing figure is 0, but C{MemTotal} is
    required, and a missing C{MemAvailable} (kernels before 3.14) is
    estimated as C{MemFree + Buffers + Cached}, as C{free(1)} did then.

    @param path: the file's name, for error messages.
    @raise ProcfsError: no C{MemTotal}, or a carried figure is not a
        number of kB.
    """
    found: dict[str, int] = {}
    for line in text.split("\n"):
        if not line.startswith(_MEMINFO_PREFIXES):
            continue
        key, colon, rest = line.partition(":")
        attribute = _MEMINFO_KEYS.get(key)
        if attribute is None or not colon or attribute in found:
            continue
        words = rest.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] != "kB"):
            raise ProcfsError(path, f"{key}: expected a number of kB, got {_show(rest.strip())}")
        value = _unsigned(words[0], path, key)
        if len(words) == 2:
            value *= 1024
            if value > _U64:
                raise ProcfsError(path, f"{key}: out of range: {words[0]} kB")
        found[attribute] = value
    if "total" not in found:
        raise ProcfsError(path, "no MemTotal")
    if "available" not in found:
        found["available"] = min(
            found.get("free", 0) + found.get("buffers", 0) + found.get("cached", 0), _U64
        )
    return Memory(**found)


# -- /proc/loadavg ----------------------------------------------------------------


def parseLoadavg(text: str, path: str = "/proc/loadavg") -> Load:
    """
    Parse C{/proc/loadavg}: C{"0.10 0.43 0.72 1/85 27714"}.  Fields after the
    fifth are ignored.

    @param path: the file's name, for error messages.
    @raise ProcfsError: fewer than five fields, or one not in its format.
    """
    fields = text.split()
    if len(fields) < 5:
        raise ProcfsError(path, f"expected 5 fields, got {len(fields)}")
    running, slash, total = fields[3].partition("/")
    if not slash:
        raise ProcfsError(path, f"expected running/total, got {_show(fields[3])}")
    return Load(
        one=_real(fields[0], path, "1-minute load"),
        five=_real(fields[1], path, "5-minute load"),
        fifteen=_real(fields[2], path, "15-minute load"),
        running=_unsigned(running, path, "running"),
        total=_unsigned(total, path, "total"),
        lastPid=_unsigned(fields[4], path, "last pid"),
    )


# -- /proc/stat --------------------------------------------------------------------


def _ticks(fields: list[str], path: str) -> CpuTicks:
    """
    The L{CpuTicks} of one C{cpu} line split in words (name first): missing
    later counters are 0, counters after the eighth are ignored.
    """
    values = fields[1 : _TICKS + 1]
    if len(values) < 4:
        raise ProcfsError(path, f"{fields[0]}: expected at least 4 counters, got {len(values)}")
    joined = "".join(values)
    if not (joined.isascii() and joined.isdigit()):
        bad = next(v for v in values if not (v.isascii() and v.isdigit()))
        raise ProcfsError(path, f"{fields[0]}: not a counter: {_show(bad)}")
    try:
        numbers = [int(v) for v in values]
    except ValueError:  # more digits than int() accepts
        numbers = [_U64 + 1]
    if max(numbers) > _U64:
        raise ProcfsError(path, f"{fields[0]}: counter out of range")
    return CpuTicks(*numbers)


def parseStat(text: str, path: str = "/proc/stat") -> tuple[CpuTicks, tuple[CpuTicks, ...]]:
    """
    Parse the C{cpu} lines of C{/proc/stat}.

    Lines with fewer than eight counters (2.4 kernels give 4, 2.6.0-2.6.10
    give 7) have 0 for the missing ones; counters after the eighth
    (C{guest}, C{guest_nice}, whatever comes next) are ignored, as are the
    other lines.

    The kernel lists only online CPUs, so C{cpuN} numbers can have gaps.
    The per-CPU tuple is indexed by N: C{cpus[n]} is always CPU n, and a
    CPU missing below the highest listed one (offline) is all zeros, so
    deltas between two readings stay CPU by CPU.  Its length is the highest
    N plus one (offline CPUs above it do not show).  A kernel that lists no
    C{cpuN} line (some 2.4 uniprocessor kernels) gives an empty tuple.

    @param path: the file's name, for error messages.
    @return: the C{cpu} (all CPUs) line and the C{cpuN} lines.
    @raise ProcfsError: no C{cpu} line, a C{cpu} or C{cpuN} line with
        fewer than 4 counters or one that is not a number, N listed twice
        or N not below L{MAX_CPUS}.
    """
    total: CpuTicks | None = None
    cpus: dict[int, CpuTicks] = {}
    for line in text.split("\n"):
        if not line.startswith("cpu"):
            continue
        fields = line.split()
        name = fields[0]
        if name == "cpu":
            if total is not None:
                raise ProcfsError(path, "two cpu lines")
            total = _ticks(fields, path)
            continue
        number = name[3:]
        if not (number.isascii() and number.isdigit()):
            continue  # not a cpu line: something a newer kernel added
        if len(number) > 5 or int(number) >= MAX_CPUS:
            raise ProcfsError(path, f"{name}: CPU number out of range")
        n = int(number)
        if n in cpus:
            raise ProcfsError(path, f"{name} listed twice")
        cpus[n] = _ticks(fields, path)
    if total is None:
        raise ProcfsError(path, "no cpu line")
    if not cpus:
        return total, ()
    return total, tuple(cpus.get(n, _ZERO_TICKS) for n in range(max(cpus) + 1))


# -- /proc/net/dev ----------------------------------------------------------------

#: Where the carried counters are among a C{/proc/net/dev} row's numbers:
#: receive bytes, packets, errs, drop, then transmit bytes, packets, errs, drop.
_NET_COLUMNS = (0, 1, 2, 3, 8, 9, 10, 11)
#: How many numbers a row has (kernels since 2.2); more are tolerated.
_NET_NUMBERS = 16


def parseNetDev(text: str, path: str = "/proc/net/dev") -> tuple[Interface, ...]:
    """
    Parse C{/proc/net/dev}: two header lines, then one row per interface,
    C{name: 16 numbers}.  The name may be glued to the first number
    (C{"eth0:123456789"}, as older kernels print big counters); numbers
    after the sixteenth (a column a newer kernel appended) are ignored.

    A name longer than C{IFNAMSIZ - 1} (15) bytes cannot come from a
    kernel, so it makes the file malformed rather than being cut short.

    @param path: the file's name, for error messages.
    @return: the interfaces in the file's order.
    @raise ProcfsError: a header line is missing, or a row has no name,
        an impossible name, a name seen before, fewer than 16 numbers or
        one that is not a counter.
    """
    lines = text.split("\n")
    if len(lines) < 2 or "|" not in lines[0] or "|" not in lines[1]:
        raise ProcfsError(path, "expected two header lines")
    interfaces = []
    seen = set()
    for number, line in enumerate(lines[2:], 3):
        name, colon, rest = line.partition(":")
        name = name.strip()
        if not colon:
            if name:
                raise ProcfsError(path, f"line {number}: no 'name:'")
            continue  # the empty line after the final newline
        if not name or len(name.split()) != 1:
            raise ProcfsError(path, f"line {number}: bad interface name {_show(name)}")
        if len(name.encode("utf-8", "surrogateescape")) > IFNAMSIZ - 1:
            raise ProcfsError(path, f"line {number}: interface name longer than "
                                    f"{IFNAMSIZ - 1} bytes: {_show(name)}")
        if name in seen:
            raise ProcfsError(path, f"line {number}: interface {_show(name)} listed twice")
        seen.add(name)
        fields = rest.split()
        if len(fields) < _NET_NUMBERS:
            raise ProcfsError(path, f"line {number}: {_show(name)}: expected {_NET_NUMBERS} "
                                    f"numbers, got {len(fields)}")
        interfaces.append(Interface(
            name, *(_unsigned(fields[i], path, name) for i in _NET_COLUMNS)
        ))
    return tuple(interfaces)


# -- statfs -----------------------------------------------------------------------


def statfs(path: str) -> FileSystem:
    """
    C{statvfs(2)} of the file system holding C{path}.

    The block size reported is C{f_frsize}, the fundamental block size,
    not C{f_bsize}: POSIX gives C{f_blocks}, C{f_bfree} and C{f_bavail} in
    units of C{f_frsize}, while C{f_bsize} is only the preferred I/O size.
    The two are equal on most local file systems, but not everywhere (NFS,
    for one, reports its transfer size as C{f_bsize}), and multiplying the
    counts by C{f_bsize} would then give wrong sizes.

    @raise OSError: C{path} cannot be reached.
    """
    result = os.statvfs(path)
    return FileSystem(
        blockSize=result.f_frsize,
        blocks=result.f_blocks,
        free=result.f_bfree,
        available=result.f_bavail,
        files=result.f_files,
        freeFiles=result.f_ffree,
    )


# -- all of it --------------------------------------------------------------------


def _read(path: str) -> str:
    """
    A C{/proc} file's text, decoded as the module docstring says.
    """
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def _reason(error: Exception) -> str:
    """
    What L{readSnapshot} reports for a part that failed with C{error}.
    """
    if isinstance(error, ProcfsError):
        return error.reason
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"unexpected error: {error!r}"


def readSnapshot(root: str = "/proc", rootfs: str = "/", *, cpuInfo: bool = True) -> Snapshot:
    """
    Read and parse C{cpuinfo}, C{stat}, C{meminfo}, C{loadavg} and
    C{net/dev} under C{root}, and L{statfs} C{rootfs}.

    Never raises for a bad file: each part that cannot be read or parsed is
    L{None} in the result, with C{(path, reason)} in its C{errors}.

    @param root: where C{/proc} is (a fixture tree in tests).
    @param rootfs: a path on the file system to report.
    @param cpuInfo: whether to read C{cpuinfo}.  Its contents rarely change
        and reading it is slow on many-CPU x86 machines (the kernel samples
        every CPU's clock), so a caller may read it less often; when
        C{False}, C{cpuInfo} is L{None} and no error is recorded.
    """
    errors: list[tuple[str, str]] = []

    def parsed(name: str, parse: Callable[[str, str], _T]) -> _T | None:
        path = os.path.join(root, name)
        try:
            return parse(_read(path), path)
        except Exception as e:  # a bad file must not stop the others
            errors.append((path, _reason(e)))
            return None

    info = parsed("cpuinfo", parseCpuinfo) if cpuInfo else None
    stat = parsed("stat", parseStat)
    memory = parsed("meminfo", parseMeminfo)
    load = parsed("loadavg", parseLoadavg)
    interfaces = parsed("net/dev", parseNetDev)
    try:
        fs: FileSystem | None = statfs(rootfs)
    except Exception as e:
        errors.append((rootfs, _reason(e)))
        fs = None
    return Snapshot(
        cpuInfo=info,
        cpuTotal=stat[0] if stat is not None else None,
        cpus=stat[1] if stat is not None else None,
        memory=memory,
        load=load,
        interfaces=interfaces,
        rootfs=fs,
        errors=tuple(errors),
    )
