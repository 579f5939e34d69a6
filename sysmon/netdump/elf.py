"""
The ELF core header of a netdump vmcore: a pure encoder, no I/O.

The layout (docs/netdump-vmcore.md) is what the C{crash} utility's netdump
reader expects:

 - ELF64 for 64-bit clients, ELF32 for i386, in the client's byte order;
   C{e_type} = ET_CORE; program headers right after the ELF header.
 - phdr[0] is PT_NOTE, holding NT_PRSTATUS (C{pr_reg} = the registers the
   client sent), NT_PRPSINFO and NT_TASKSTRUCT (descriptor = the crashing
   task's address).  Every note's name is "CORE" with C{n_namesz} 4, as
   RHEL4's kcore writes them: crash reads the NT_TASKSTRUCT descriptor at
   name + n_namesz.
 - Then PT_LOAD segments with C{p_align} = page size.  Physical page C{pfn}
   is always at file offset C{dataStart + pfn * pageSize}, so holes and zero
   pages are never written (the file is sparse) and a resumed dump writes
   where it left off.  ELF64 gets one PT_LOAD per RAM range; ELF32 gets one
   linear PT_LOAD from physical 0 (crash's ELF32 netdump reader computes
   file offsets as C{paddr + header size}), holes reading as zeros.  An
   i386 client with more than 4 GiB gets ELF64, as kdump does.
"""

from __future__ import annotations

import struct
from typing import Final, Sequence

import attrs

from sysmon.netdump.wire import EM_386, EM_IA_64, EM_PPC64, EM_X86_64, GREGSET_SIZE

__all__ = ["CoreLayout", "buildHeader", "layoutFor", "mergeRanges"]

ET_CORE: Final = 4
PT_LOAD: Final = 1
PT_NOTE: Final = 4
NT_PRSTATUS: Final = 1
NT_PRPSINFO: Final = 3
NT_TASKSTRUCT: Final = 4
PF_RWX: Final = 7

#: Room reserved for this many PT_LOAD headers in ELF64 cores.
MAX_LOADS: Final = 1024

_BIG_ENDIAN = {EM_PPC64}


@attrs.frozen
class CoreLayout:
    """
    Where things are in one client's vmcore.

    @ivar machine: the ELF machine.
    @ivar bits: 32 or 64.
    @ivar order: C{"<"} or C{">"} (struct byte order).
    @ivar pageSize: the client's page size.
    @ivar nrPages: page frames (max pfn).
    @ivar dataStart: file offset of physical page 0 (page-aligned).
    """

    machine: int
    bits: int
    order: str
    pageSize: int
    nrPages: int
    dataStart: int

    def offsetOf(self, pfn: int) -> int:
        return self.dataStart + pfn * self.pageSize

    @property
    def size(self) -> int:
        """
        The file's length when every page is in.
        """
        return self.offsetOf(self.nrPages)


def _roundUp(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _noteSize(descSize: int) -> int:
    return 12 + 4 + _roundUp(descSize, 4)


def _prstatusSize(bits: int, machine: int) -> int:
    greg = GREGSET_SIZE.get(machine, 0)
    if bits == 64:
        return _roundUp(112 + greg + 4, 8)
    return 72 + greg + 4


def _notesSize(bits: int, machine: int) -> int:
    return (
        _noteSize(_prstatusSize(bits, machine))
        + _noteSize(136 if bits == 64 else 124)
        + _noteSize(bits // 8)
    )


def layoutFor(machine: int, pageSize: int, nrPages: int) -> CoreLayout:
    """
    The layout of a vmcore for a client.

    @raise ValueError: an unknown machine or a page size that is not a
        power of two multiple of 1024.
    """
    if machine not in (EM_386, EM_X86_64, EM_IA_64, EM_PPC64):
        raise ValueError(f"unknown ELF machine {machine}")
    if pageSize < 1024 or pageSize & (pageSize - 1):
        raise ValueError(f"page size {pageSize} is not a power of two >= 1024")
    # An i386 client with more than 4 GiB (PAE) does not fit ELF32; crash
    # reads ELF64 cores of EM_386 too.
    bits = 32 if machine == EM_386 and nrPages * pageSize <= 2**32 else 64
    order = ">" if machine in _BIG_ENDIAN else "<"
    ehsize, phentsize = (52, 32) if bits == 32 else (64, 56)
    loads = 1 if bits == 32 else MAX_LOADS
    header = ehsize + (1 + loads) * phentsize + _notesSize(bits, machine)
    return CoreLayout(machine, bits, order, pageSize, nrPages, _roundUp(header, pageSize))


def mergeRanges(
    ranges: Sequence[tuple[int, int]], limit: int | None = None
) -> list[tuple[int, int]]:
    """
    Sorted, non-overlapping C{[start, end)} page ranges, at most C{limit} of
    them: touching ranges are joined, and if there are still too many the
    smallest gaps are filled (a filled gap reads as zeros).
    """
    merged: list[list[int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    excess = 0 if limit is None else len(merged) - max(limit, 1)
    if excess > 0:
        gapSize = lambda i: merged[i + 1][0] - merged[i][1]  # noqa: E731
        fill = set(sorted(range(len(merged) - 1), key=gapSize)[:excess])
        joined: list[list[int]] = []
        for i, r in enumerate(merged):
            if joined and i - 1 in fill:
                joined[-1][1] = r[1]
            else:
                joined.append(r)
        merged = joined
    return [(a, b) for a, b in merged]


def _note(order: str, noteType: int, desc: bytes) -> bytes:
    padded = desc + b"\0" * (_roundUp(len(desc), 4) - len(desc))
    return struct.pack(order + "III", 4, len(desc), noteType) + b"CORE" + padded


def _prstatus(layout: CoreLayout, registers: bytes) -> bytes:
    greg = GREGSET_SIZE.get(layout.machine, 0)
    regs = registers[:greg].ljust(greg, b"\0")
    head = 112 if layout.bits == 64 else 72
    body = b"\0" * head + regs + b"\0" * 4
    return body.ljust(_prstatusSize(layout.bits, layout.machine), b"\0")


def _prpsinfo(layout: CoreLayout) -> bytes:
    o = layout.order
    fname = b"vmlinux".ljust(16, b"\0")
    psargs = b"netdump".ljust(80, b"\0")
    if layout.bits == 64:
        # state, sname, zomb, nice, pad, flag, uid, gid, pid, ppid, pgrp, sid
        head = struct.pack(o + "bcbb4xQIIiiii", 0, b"R", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    else:
        head = struct.pack(o + "bcbbIHHiiii", 0, b"R", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return head + fname + psargs


#: per ELF class: ehsize, phentsize, the rest of the ELF header after
#: e_ident, and the size of an address.
_CLASS = {
    64: (64, 56, "HHIQQQIHHHHHH", "Q"),
    32: (52, 32, "HHIIIIIHHHHHH", "I"),
}


def _phdr(layout: CoreLayout, ptype: int, flags: int, offset: int, vaddr: int, paddr: int,
          length: int, align: int) -> bytes:
    """
    One program header (C{p_filesz} = C{p_memsz} = C{length}); the field
    order differs between the classes.
    """
    if layout.bits == 64:
        return struct.pack(layout.order + "IIQQQQQQ", ptype, flags, offset, vaddr, paddr,
                           length, length, align)
    return struct.pack(layout.order + "IIIIIIII", ptype, offset, vaddr, paddr, length, length,
                       flags, align)


def buildHeader(
    layout: CoreLayout,
    ramRanges: Sequence[tuple[int, int]],
    registers: bytes,
    taskStruct: int,
    pageOffset: int,
) -> bytes:
    """
    The bytes from offset 0 of the vmcore up to C{layout.dataStart}.

    @param ramRanges: C{[start, end)} pfn ranges that are RAM (ELF64: one
        PT_LOAD each, merged down to L{MAX_LOADS}; ELF32 ignores them and
        maps C{[0, nrPages)}).
    @param registers: the raw C{elf_gregset_t} from the client.
    @param taskStruct: address of the crashing task (NT_TASKSTRUCT).
    @param pageOffset: the kernel's PAGE_OFFSET, for C{p_vaddr}.
    """
    o = layout.order
    size = layout.pageSize
    if layout.bits == 32:
        loads = [(0, layout.nrPages)]
    else:
        loads = mergeRanges(ramRanges, MAX_LOADS)
    ehsize, phentsize, ehdrFormat, address = _CLASS[layout.bits]
    mask = 2**layout.bits - 1
    notes = (
        _note(o, NT_PRSTATUS, _prstatus(layout, registers))
        + _note(o, NT_PRPSINFO, _prpsinfo(layout))
        + _note(o, NT_TASKSTRUCT, struct.pack(o + address, taskStruct & mask))
    )
    phnum = 1 + len(loads)
    notesAt = ehsize + phnum * phentsize
    ident = b"\x7fELF" + bytes([layout.bits // 32, 2 if o == ">" else 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack(
        o + ehdrFormat, ET_CORE, layout.machine, 1, 0, ehsize, 0, 0,
        ehsize, phentsize, phnum, 0, 0, 0,
    )
    phdrs = _phdr(layout, PT_NOTE, 0, notesAt, 0, 0, len(notes), 0)
    for start, end in loads:
        phdrs += _phdr(
            layout, PT_LOAD, PF_RWX, layout.offsetOf(start) & mask,
            (pageOffset + start * size) & mask, (start * size) & mask,
            ((end - start) * size) & mask, size,
        )
    header = ehdr + phdrs + notes
    if len(header) > layout.dataStart:
        raise ValueError("ELF header larger than the room reserved for it")
    return header.ljust(layout.dataStart, b"\0")
