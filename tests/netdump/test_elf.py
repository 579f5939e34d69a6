"""
Tests for the vmcore's ELF header (L{sysmon.netdump.elf}).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from sysmon.netdump import elf, wire
from sysmon.netdump.sim import _readCore


class LayoutTests(SynchronousTestCase):
    """
    L{elf.layoutFor}.
    """

    def test_classes(self):
        """
        i386 is ELF32 little-endian, x86_64 ELF64 little-endian, ppc64 ELF64
        big-endian; an i386 with more than 4 GiB gets ELF64.
        """
        self.assertEqual(elf.layoutFor(wire.EM_386, 4096, 1000).bits, 32)
        self.assertEqual(elf.layoutFor(wire.EM_X86_64, 4096, 1000).order, "<")
        self.assertEqual(elf.layoutFor(wire.EM_PPC64, 65536, 1000).order, ">")
        self.assertEqual(elf.layoutFor(wire.EM_386, 4096, 2**21).bits, 64)

    def test_dataStartPageAligned(self):
        """
        Page data starts page-aligned after room for the headers, and page
        pfn sits at dataStart + pfn * page size.
        """
        for size in (4096, 16384, 65536):
            layout = elf.layoutFor(wire.EM_X86_64, size, 100)
            self.assertEqual(layout.dataStart % size, 0)
            self.assertGreaterEqual(layout.dataStart, 64 + 1025 * 56)
            self.assertEqual(layout.offsetOf(7), layout.dataStart + 7 * size)
        self.assertEqual(elf.layoutFor(wire.EM_386, 4096, 100).dataStart, 4096)

    def test_badInput(self):
        """
        Unknown machines and page sizes that are not powers of two >= 1024
        are refused.
        """
        self.assertRaises(ValueError, elf.layoutFor, 99, 4096, 1)
        self.assertRaises(ValueError, elf.layoutFor, wire.EM_X86_64, 3000, 1)
        self.assertRaises(ValueError, elf.layoutFor, wire.EM_X86_64, 512, 1)


class MergeTests(SynchronousTestCase):
    """
    L{elf.mergeRanges}.
    """

    def test_merge(self):
        """
        Overlapping and touching ranges join; empty ones vanish.
        """
        self.assertEqual(elf.mergeRanges([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)]),
                         [(0, 4), (5, 12)])

    def test_limit(self):
        """
        Over the limit, the smallest gaps are filled first.
        """
        ranges = [(0, 10), (11, 20), (30, 40), (42, 50)]
        self.assertEqual(elf.mergeRanges(ranges, 3), [(0, 20), (30, 40), (42, 50)])
        self.assertEqual(elf.mergeRanges(ranges, 2), [(0, 20), (30, 50)])
        self.assertEqual(elf.mergeRanges(ranges, 1), [(0, 50)])

    def test_manyRangesFast(self):
        """
        Thousands of holes are merged down to the header's room.
        """
        ranges = [(i * 3, i * 3 + 2) for i in range(20000)]
        merged = elf.mergeRanges(ranges, elf.MAX_LOADS)
        self.assertEqual(len(merged), elf.MAX_LOADS)
        self.assertEqual((merged[0][0], merged[-1][1]), (0, 59999))


class HeaderTests(SynchronousTestCase):
    """
    L{elf.buildHeader}, read back.
    """

    def write(self, layout, ranges, regs, task=0x1234, offset=0xFFFF880000000000):
        path = self.mktemp()
        header = elf.buildHeader(layout, ranges, regs, task, offset)
        with open(path, "wb") as f:
            f.write(header)
            f.truncate(layout.size)
        return path

    def test_elf64(self):
        """
        ET_CORE, PT_NOTE first with the three notes, one PT_LOAD per range
        at linear offsets with p_align = page size and p_vaddr =
        PAGE_OFFSET + paddr.
        """
        layout = elf.layoutFor(wire.EM_X86_64, 4096, 1000)
        regs = bytes(range(216))
        path = self.write(layout, [(0, 160), (256, 1000)], regs, task=0xFFFF88003A6C8000)
        info, phdrs, notes = _readCore(path)
        self.assertEqual((info["bits"], info["type"], info["machine"]), (64, 4, 62))
        self.assertEqual(phdrs[0][0], 4)
        self.assertEqual(sorted(notes), [1, 3, 4])
        self.assertEqual(notes[1][112:112 + 216], regs)
        self.assertEqual(len(notes[1]), 336)
        self.assertEqual(len(notes[3]), 136)
        self.assertEqual(notes[4], (0xFFFF88003A6C8000).to_bytes(8, "little"))
        loads = [p for p in phdrs if p[0] == 1]
        self.assertEqual(
            [(p[1], p[2], p[3], p[4], p[6]) for p in loads],
            [(layout.dataStart, 0xFFFF880000000000, 0, 160 * 4096, 4096),
             (layout.offsetOf(256), 0xFFFF880000000000 + 256 * 4096, 256 * 4096, 744 * 4096, 4096)],
        )

    def test_elf32(self):
        """
        i386: ELF32, sizes of the i386 structures, one PT_LOAD from 0.
        """
        layout = elf.layoutFor(wire.EM_386, 4096, 1000)
        path = self.write(layout, [(0, 10), (20, 1000)], bytes(68), task=0xC1F4A000,
                          offset=0xC0000000)
        info, phdrs, notes = _readCore(path)
        self.assertEqual((info["bits"], info["machine"]), (32, 3))
        self.assertEqual((len(notes[1]), len(notes[3])), (144, 124))
        self.assertEqual(notes[4], (0xC1F4A000).to_bytes(4, "little"))
        self.assertEqual([(p[0], p[3], p[4]) for p in phdrs[1:]], [(1, 0, 1000 * 4096)])

    def test_bigEndian(self):
        """
        ppc64 headers are big-endian.
        """
        layout = elf.layoutFor(wire.EM_PPC64, 65536, 64)
        path = self.write(layout, [(0, 64)], bytes(384), task=0xC00000003FF24000)
        info, phdrs, notes = _readCore(path)
        self.assertEqual((info["order"], info["machine"]), (">", 21))
        self.assertEqual(notes[4], (0xC00000003FF24000).to_bytes(8, "big"))

    def test_readelf(self):
        """
        binutils' readelf reads the header: ET_CORE, the notes by name, and
        the PT_LOADs with alignment 0x1000.
        """
        if shutil.which("readelf") is None:
            raise self.skipTest("readelf (binutils) is not installed")
        layout = elf.layoutFor(wire.EM_X86_64, 4096, 1000)
        path = self.write(layout, [(0, 160), (256, 1000)], bytes(216))
        out = subprocess.run(["readelf", "-W", "-h", "-l", "-n", path], capture_output=True,
                             text=True, check=True).stdout
        self.assertIn("CORE (Core file)", out)
        for name in ("NT_PRSTATUS", "NT_PRPSINFO", "NT_TASKSTRUCT"):
            self.assertIn(name, out)
        loads = [l.split() for l in out.splitlines() if l.strip().startswith("LOAD")]
        self.assertEqual(len(loads), 2)
        self.assertEqual({l[-1] for l in loads}, {"0x1000"})
        self.assertEqual(os.path.getsize(path), layout.size)
