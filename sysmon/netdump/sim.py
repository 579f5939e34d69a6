"""
C{netdump-sim}: a crashing netdump client, emulated from the Red Hat
kernel clients' rules, to test a netdump server; and C{--verify DIR}, which
checks a vmcore the server wrote, page by page.

The emulated client (L{SimClient}) behaves as the kernel does: it announces
its crash with START_NETDUMP once a second until it gets START_NETDUMP_ACK,
discarding every other request until then; then it answers each request in
order and never retransmits.  Its memory (L{Memory}) is generated from a
seed: reserved holes (answered with RESERVED and the next RAM pfn by a
version 5 client, with zero pages by a version 4 one), a fraction of zero
pages, and deterministic contents that L{verify} recomputes.  Fragments can
be dropped at a given rate.  Before the crash it sends its console log as
REPLY_LOG chunks from its log port; SHOW_STATE prints more text there.

Exit status: 0 when the server rebooted it, 1 when the server went silent
(C{--idle-timeout}), 2 for bad usage; C{--verify}: 0 when the vmcore is
right, 1 when it is not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time
from typing import Any, Callable, Sequence

from sysmon.netdump import wire
from sysmon.netdump.wire import COMM, REPLY, StartInfo

__all__ = ["Memory", "SimClient", "main", "verify"]

_REQUEST = struct.Struct(">QIIII")
_HEADER = struct.Struct(">BIII")
SEND_MEM = COMM.SEND_MEM.to_bytes(4, "big")
#: Linux's UDP_SEGMENT socket option (UDP generic segmentation offload).
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: Fragments per GSO send (the kernel allows 64 segments and 64 KiB).
GSO_SEGMENTS = 32

MACHINES = {
    "x86_64": (wire.EM_X86_64, 0xFFFF880000000000, 0xFFFF88003A6C8000),
    "i386": (wire.EM_386, 0xC0000000, 0xC1F4A000),
    "ia64": (wire.EM_IA_64, 0xE000000000000000, 0xE00000003FE10000),
    "ppc64": (wire.EM_PPC64, 0xC000000000000000, 0xC00000003FF24000),
}

_M64 = 2**64 - 1


def _mix(x: int) -> int:
    """
    splitmix64's finalizer: a fast, well-spread hash of an integer.
    """
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def parseSize(text: str) -> int:
    """
    C{"256M"}, C{"4K"}, C{"1G"}, C{"4096"} -> bytes.
    """
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class Memory:
    """
    The crashed machine's physical memory, generated from a seed.

    @ivar holes: reserved C{[start, end)} pfn ranges (not RAM).
    """

    def __init__(self, nrPages: int, pageSize: int, holes: Sequence[tuple[int, int]] = (),
                 zeroFraction: float = 0.0, seed: int = 1) -> None:
        self.nrPages = nrPages
        self.pageSize = pageSize
        self.holes = sorted((max(0, a), min(b, nrPages)) for a, b in holes if b > a)
        self.zeroThreshold = int(zeroFraction * 2**64)
        self.seed = seed
        rng = random.Random(seed)
        self._base = rng.randbytes(2 * pageSize)
        self._zero = bytes(pageSize)
        self.registers = {size: rng.randbytes(size) for size in set(wire.GREGSET_SIZE.values())}

    def isRam(self, pfn: int) -> bool:
        for start, end in self.holes:
            if start <= pfn < end:
                return False
        return 0 <= pfn < self.nrPages

    def nextRam(self, pfn: int) -> int:
        """
        The first RAM pfn after C{pfn}, or 0 when there is none.
        """
        candidate = pfn + 1
        for start, end in self.holes:
            if start <= candidate < end:
                candidate = end
        return candidate if candidate < self.nrPages else 0

    def ramPages(self) -> int:
        return self.nrPages - sum(end - start for start, end in self.holes)

    def ramRanges(self) -> list[tuple[int, int]]:
        ranges, at = [], 0
        for start, end in self.holes:
            if start > at:
                ranges.append((at, start))
            at = max(at, end)
        if at < self.nrPages:
            ranges.append((at, self.nrPages))
        return ranges

    def isZero(self, pfn: int) -> bool:
        return _mix(self.seed * 0x100000001B3 ^ pfn) < self.zeroThreshold

    def page(self, pfn: int) -> bytes:
        """
        The contents of RAM page C{pfn}.
        """
        if self.isZero(pfn):
            return self._zero
        size = self.pageSize
        k = _mix(pfn ^ self.seed) % size
        return struct.pack("<QQ", pfn, self.seed) + self._base[k : k + size - 16]


DEFAULT_LOG = (
    "[...network console startup...]\n"
    "Linux version 2.6.9-89.ELsmp (simulated) #1 SMP\n"
    "Memory: {mem}k available\n"
    "netdump: network crash dump enabled\n"
    "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000\n"
    "RIP: 0010:[<ffffffff80123456>] sysrq_handle_crash+0x0/0x10\n"
    "Oops: 0002 [1] SMP\n"
    "Call Trace: <ffffffff80234567>{{__handle_sysrq+0x9f}}\n"
    "Kernel panic - not syncing: Oops\n"
)

STATE_TEXT = (
    "SysRq : Show State\n"
    "                                               sibling\n"
    "  task             PC          pid father child younger older\n"
    "init          S 0000000000000000     0     1      0     2               (NOTLB)\n"
    "bash          R  running task        0  4242   4200                     (NOTLB)\n"
    "Mem-info:\nFree pages:       12345kB\n"
)


class SimClient:
    """
    The client's protocol logic, without sockets: L{handle} takes one
    request and returns the datagrams to send.

    @ivar machine: its ELF machine.
    @ivar version: the highest protocol version it speaks (5, or 4 for an
        old client that sends zero pages for holes).
    @ivar drop: probability of dropping each reply fragment.
    @ivar served: one bit per pfn that was sent (for progress).
    """

    def __init__(self, memory: Memory, machine: int = wire.EM_X86_64, version: int = 5,
                 magic: int = 0x1111111111111111, legacy: bool = False, drop: float = 0.0,
                 rng: random.Random | None = None, stateText: str = STATE_TEXT,
                 pageOffset: int = 0, taskStruct: int = 0) -> None:
        self.memory = memory
        self.machine = machine
        self.version = version
        self.magic = magic
        self.legacy = legacy
        self.drop = drop
        self.rng = rng or random.Random(memory.seed + 1)
        self.stateText = stateText.encode()
        self.pageOffset = pageOffset
        self.taskStruct = taskStruct
        self.acked = False
        self.effective = wire.BASE_VERSION
        self.rebooted = False
        self.ended = False
        self.served = bytearray((memory.nrPages + 7) // 8)
        self.servedCount = 0
        self.requests = 0
        self.dropped = 0
        self.logOffset = 0
        self._stale = b"\xde\xad\xbe\xef"
        self.firstMem: float | None = None
        self.lastMem: float | None = None
        self._fragment = bytearray(wire.HEADER_SIZE + wire.FRAGMENT_SIZE)
        self._fragmentView = memoryview(self._fragment)
        #: send a page's fragments with one UDP_SEGMENT (GSO) send
        self.gso = False
        self._gsoBuffer = bytearray(GSO_SEGMENTS * (wire.HEADER_SIZE + wire.FRAGMENT_SIZE))
        self._gsoView = memoryview(self._gsoBuffer)

    def start(self) -> bytes:
        """
        The START_NETDUMP announcement.
        """
        if self.legacy:
            return wire.encodeStart(StartInfo(0, wire.BASE_VERSION))
        info = StartInfo(self.machine, self.version, self.taskStruct, self.pageOffset,
                         self.magic)
        return wire.encodeStart(info)

    def logChunks(self, text: bytes, size: int = 1000) -> list[bytes]:
        """
        Console text as REPLY_LOG datagrams, continuing the stream's offsets.
        """
        out = []
        for i in range(0, len(text), size):
            chunk = text[i : i + size]
            out.append(_HEADER.pack(wire.BASE_VERSION, 0, REPLY.LOG, self.logOffset) + chunk)
            self.logOffset += len(chunk)
        return out

    def handle(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        """
        Answer one request.

        @return: datagrams for the server from the dump port, and console
            text datagrams from the log port.
        """
        if len(data) < wire.REQUEST_SIZE:
            return [], []
        magic, nr, command, arg, _ = _REQUEST.unpack_from(data)
        if not self.acked:
            if command != COMM.START_NETDUMP_ACK:
                return [], []  # the kernel discards it
            self.acked = True
            if self.machine == wire.EM_386 or self.legacy:
                self.effective = wire.BASE_VERSION if arg == 0 else min(arg, 5)
            elif arg == 0:
                self.rebooted = True  # "server cannot handle this client"
                return [], []
            else:
                self.effective = min(arg, self.version)
            return [], []
        self.requests += 1
        v = self.effective
        if command == COMM.SEND_MEM:
            return self._sendMem(v, nr, arg), []
        if command == COMM.GET_PAGE_SIZE:
            text = b"PAGE_SIZE: %d\n" % self.memory.pageSize
            return [_HEADER.pack(v, nr, REPLY.PAGE_SIZE, self.memory.pageSize) + text], []
        if command == COMM.GET_NR_PAGES:
            text = b"Number of pages: %d\n" % self.memory.nrPages
            return [_HEADER.pack(v, nr, REPLY.NR_PAGES, self.memory.nrPages) + text], []
        if command == COMM.GET_REGS:
            regs = self.memory.registers[wire.GREGSET_SIZE[self.machine]]
            payload = (wire.REGS_TEXT + regs + self._stale)[: wire.FRAGMENT_SIZE]
            total = self.memory.ramPages() if self.version >= 5 else self.memory.nrPages
            return [_HEADER.pack(v, nr, REPLY.REGS, total) + payload], []
        if command == COMM.HELLO:
            text = b"Hello, this is netdump version 0.04\n"
            return [_HEADER.pack(v, nr, REPLY.HELLO, 4) + text], []
        if command == COMM.SHOW_STATE:
            logs = self.logChunks(self.stateText)
            return [_HEADER.pack(v, nr, REPLY.SHOW_STATE, 0) + self._stale * 4], logs
        if command == COMM.START_NETDUMP_ACK:
            text = b"Got unknown command code 7!\n"
            return [_HEADER.pack(v, nr, REPLY.ERROR, command) + text], []
        if command == COMM.REBOOT:
            self.rebooted = True
            return [], []
        if command == COMM.EXIT:
            self.ended = True
            return [_HEADER.pack(v, 0, REPLY.END_NETDUMP, 0) + b"NETDUMP end.\n"], []
        if command == COMM.NONE:
            return [], []
        text = b"Got unknown command code %d!\n" % command
        return [_HEADER.pack(v, nr, REPLY.ERROR, command) + text], []

    def _markServed(self, pfn: int) -> None:
        i, bit = pfn >> 3, 1 << (pfn & 7)
        if not self.served[i] & bit:
            self.served[i] |= bit
            self.servedCount += 1

    def _sendMem(self, v: int, nr: int, pfn: int) -> list[bytes]:
        out: list[bytes] = []
        self.serveMem(v, nr, pfn, lambda data, addr: out.append(bytes(data)), None)
        return out

    def serveMem(self, v: int, nr: int, pfn: int,
                 sendto: Callable[[Any, Any], Any], addr: Any) -> None:
        """
        Answer SEND_MEM for C{pfn}: each datagram goes to C{sendto(data,
        addr)}, from one reused buffer (the hot path of the simulator).
        """
        memory = self.memory
        self.lastMem = time.monotonic()
        if self.firstMem is None:
            self.firstMem = self.lastMem
        if pfn >= memory.nrPages:
            text = b"page %08x is bigger than max page # %08x!\n" % (pfn, memory.nrPages)
            sendto(_HEADER.pack(v, nr, REPLY.ERROR, 0) + text, addr)
            return
        if not memory.isRam(pfn):
            if self.version >= 5:
                self._markServed(pfn)
                sendto(_HEADER.pack(v, nr, REPLY.RESERVED, memory.nextRam(pfn)), addr)
                return
            page = bytes(memory.pageSize)  # old clients send the zero page
        else:
            page = memory.page(pfn)
        self._markServed(pfn)
        drop, rnd = self.drop, self.rng.random
        pack = _HEADER.pack_into
        size = wire.FRAGMENT_SIZE
        step = wire.HEADER_SIZE + size
        if self.gso:
            # Build the fragments back to back; the kernel cuts them into
            # separate datagrams (UDP_SEGMENT), as if sent one by one.
            buf, view = self._gsoBuffer, self._gsoView
            at = 0
            for offset in range(0, memory.pageSize, size):
                if drop and rnd() < drop:
                    self.dropped += 1
                    continue
                pack(buf, at, v, nr, REPLY.MEM, offset)
                view[at + wire.HEADER_SIZE : at + step] = page[offset : offset + size]
                at += step
                if at == GSO_SEGMENTS * step:
                    sendto(view[:at], addr)
                    at = 0
            if at:
                sendto(view[:at], addr)
            return
        buf, view = self._fragment, self._fragmentView
        for offset in range(0, memory.pageSize, size):
            if drop and rnd() < drop:
                self.dropped += 1
                continue
            pack(buf, 0, v, nr, REPLY.MEM, offset)
            view[wire.HEADER_SIZE :] = page[offset : offset + size]
            sendto(buf, addr)


# -- the network loop ---------------------------------------------------------------


class Progress:
    """
    A progress bar on stderr.
    """

    def __init__(self, total: int, enabled: bool, stream=sys.stderr) -> None:  # type: ignore[no-untyped-def]
        self.total = max(total, 1)
        self.enabled = enabled
        self.stream = stream
        self.last = 0.0
        self.started = time.monotonic()

    def show(self, done: int, note: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        fraction = min(done / self.total, 1.0)
        width = 30
        bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
        rate = done / max(now - self.started, 1e-6)
        self.stream.write(f"\r[{bar}] {fraction * 100:5.1f}% {done}/{self.total} pages "
                          f"{rate:8.0f} pages/s {note:<20}")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def run(client: SimClient, server: tuple[str, int], bind: str, port: int, logPort: int,
        logText: bytes, idleTimeout: float, progress: Progress, gso: bool = True) -> int:
    """
    Crash: send the log, announce, answer requests until rebooted.

    @param gso: send each page's fragments with one UDP_SEGMENT send where
        the kernel supports it (the server still gets separate datagrams).
    @return: the exit status.
    """
    dump = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dump.bind((bind, port))
    dump.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    if gso:
        try:
            dump.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, wire.HEADER_SIZE + wire.FRAGMENT_SIZE)
            client.gso = True
        except OSError:
            client.gso = False
    logSock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    logSock.bind((bind, logPort))
    for chunk in client.logChunks(logText):
        logSock.sendto(chunk, server)
    start = client.start()
    serverIp = server[0]
    lastStart = 0.0
    lastHeard = time.monotonic()
    sendto = dump.sendto
    recvfrom = dump.recvfrom
    try:
        while not client.rebooted:
            now = time.monotonic()
            if not client.acked and now - lastStart >= 1.0:
                sendto(start, server)
                lastStart = now
            ready, _, _ = select.select([dump], [], [], 0.25 if not client.acked else 1.0)
            if not ready:
                if idleTimeout and time.monotonic() - lastHeard > idleTimeout:
                    progress.end()
                    print(f"netdump-sim: the server was silent for {idleTimeout:g}s; giving up",
                          file=sys.stderr)
                    return 1
                progress.show(client.servedCount, "waiting")
                continue
            # Drain what is queued before looking at the clock again.
            for _ in range(256):
                try:
                    data, addr = recvfrom(64, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[0] != serverIp:
                    continue  # the kernel only accepts the configured server
                if client.acked and len(data) == wire.REQUEST_SIZE and data[12:16] == SEND_MEM:
                    # The hot path: no lists, no copies.
                    _, nr, _, pfn, _ = _REQUEST.unpack(data)
                    client.requests += 1
                    client.serveMem(client.effective, nr, pfn, sendto, addr)
                    continue
                replies, logs = client.handle(data)
                for reply in replies:
                    sendto(reply, addr)
                for chunk in logs:
                    logSock.sendto(chunk, server)
                if client.rebooted:
                    break
            lastHeard = time.monotonic()
            progress.show(client.servedCount)
    finally:
        dump.close()
        logSock.close()
    progress.show(client.servedCount, "rebooted", force=True)
    progress.end()
    return 0


# -- verification --------------------------------------------------------------------


class VerifyError(Exception):
    pass


def _readCore(path: str) -> tuple[dict, list[tuple], dict[int, bytes]]:
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            raise VerifyError(f"{path} is not an ELF file")
        bits = {1: 32, 2: 64}.get(head[4])
        order = {1: "<", 2: ">"}.get(head[5])
        if bits is None or order is None:
            raise VerifyError("bad ELF class or data encoding")
        if bits == 64:
            (etype, machine, _, _, phoff, _, _, _, phentsize, phnum) = struct.unpack_from(
                order + "HHIQQQIHHH", head, 16)
        else:
            (etype, machine, _, _, phoff, _, _, _, phentsize, phnum) = struct.unpack_from(
                order + "HHIIIIIHHH", head, 16)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        phdrs = []
        for i in range(phnum):
            if bits == 64:
                ptype, flags, off, vaddr, paddr, filesz, memsz, align = struct.unpack_from(
                    order + "IIQQQQQQ", table, i * phentsize)
            else:
                ptype, off, vaddr, paddr, filesz, memsz, flags, align = struct.unpack_from(
                    order + "IIIIIIII", table, i * phentsize)
            phdrs.append((ptype, off, vaddr, paddr, filesz, memsz, align))
        notes: dict[int, bytes] = {}
        if phdrs and phdrs[0][0] == 4:
            f.seek(phdrs[0][1])
            blob = f.read(phdrs[0][4])
            at = 0
            while at + 12 <= len(blob):
                namesz, descsz, ntype = struct.unpack_from(order + "III", blob, at)
                at += 12 + ((namesz + 3) & ~3)
                notes[ntype] = blob[at : at + descsz]
                at += (descsz + 3) & ~3
    info = {"bits": bits, "order": order, "type": etype, "machine": machine}
    return info, phdrs, notes


def verify(directory: str, memory: Memory, machine: int, taskStruct: int,
           progress: Progress, out=sys.stdout, reservedHoles: bool = True) -> int:  # type: ignore[no-untyped-def]
    """
    Check the vmcore in C{directory} against C{memory}, page by page.

    @param reservedHoles: the client answered holes with RESERVED (version
        5), so 64-bit cores must leave them out of their PT_LOADs.

    @return: 0 when it is right, 1 when not (the reasons are printed).
    """
    path = os.path.join(directory, "vmcore")
    if not os.path.exists(path):
        partial = os.path.exists(os.path.join(directory, "vmcore-incomplete"))
        print(f"FAIL: no vmcore in {directory}"
              + (" (only vmcore-incomplete: the dump did not finish)" if partial else ""),
              file=out)
        return 1
    try:
        info, phdrs, notes = _readCore(path)
        problems = _checkHeaders(info, phdrs, notes, memory, machine, taskStruct,
                                 reservedHoles)
    except (VerifyError, struct.error) as e:
        print(f"FAIL: {e}", file=out)
        return 1
    if problems:
        for p in problems:
            print(f"FAIL: {p}", file=out)
        return 1
    size = memory.pageSize
    zero = bytes(size)
    bad = checked = zeros = 0
    loads = [p for p in phdrs if p[0] == 1]
    with open(path, "rb") as f:
        for ptype, off, vaddr, paddr, filesz, memsz, align in loads:
            first = paddr // size
            for i in range(filesz // size):
                pfn = first + i
                f.seek(off + i * size)
                data = f.read(size)
                expected = memory.page(pfn) if memory.isRam(pfn) else zero
                if data != expected:
                    bad += 1
                    if bad <= 5:
                        print(f"FAIL: page {pfn:#x} differs", file=out)
                checked += 1
                zeros += expected == zero
                if checked % 4096 == 0:
                    progress.show(checked)
    progress.show(checked, "verified", force=True)
    progress.end()
    if bad:
        print(f"FAIL: {bad} of {checked} pages differ", file=out)
        return 1
    print(f"OK: {checked} pages verified ({zeros} zero), {len(loads)} PT_LOAD segments, "
          f"{len(memory.holes)} holes", file=out)
    return 0


def _checkHeaders(info: dict, phdrs: list[tuple], notes: dict[int, bytes], memory: Memory,
                  machine: int, taskStruct: int, reservedHoles: bool) -> list[str]:
    problems = []
    order = info["order"]
    if info["type"] != 4:
        problems.append(f"e_type {info['type']} is not ET_CORE")
    if info["machine"] != machine:
        problems.append(f"e_machine {info['machine']} is not {machine}")
    if not phdrs or phdrs[0][0] != 4:
        problems.append("the first program header is not PT_NOTE")
    for ntype, name in ((1, "NT_PRSTATUS"), (3, "NT_PRPSINFO"), (4, "NT_TASKSTRUCT")):
        if ntype not in notes:
            problems.append(f"no {name} note")
    greg = wire.GREGSET_SIZE[machine]
    # ia64's register set is larger than a reply: only what fits is sent.
    sent = min(greg, wire.FRAGMENT_SIZE - len(wire.REGS_TEXT))
    if 1 in notes:
        at = 112 if info["bits"] == 64 else 72
        if notes[1][at : at + sent] != memory.registers[greg][:sent]:
            problems.append("NT_PRSTATUS pr_reg is not the client's registers")
    if 4 in notes:
        fmt = order + ("Q" if info["bits"] == 64 else "I")
        (task,) = struct.unpack_from(fmt, notes[4])
        if task != taskStruct & (2 ** info["bits"] - 1):
            problems.append(f"NT_TASKSTRUCT {task:#x} is not {taskStruct:#x}")
    loads = [p for p in phdrs if p[0] == 1]
    size = memory.pageSize
    for p in loads:
        if p[6] != size:
            problems.append(f"PT_LOAD p_align {p[6]} is not the page size {size}")
        if p[1] % size:
            problems.append(f"PT_LOAD p_offset {p[1]:#x} is not page-aligned")
    got = [(p[3] // size, (p[3] + p[4]) // size) for p in loads]
    whole = [(0, memory.nrPages)]
    want = memory.ramRanges() if info["bits"] == 64 and reservedHoles else whole
    if got != want:
        problems.append(f"PT_LOAD ranges {got} are not the RAM ranges {want}")
    return problems


# -- command line ------------------------------------------------------------------


def _holes(text: str, pageSize: int) -> list[tuple[int, int]]:
    holes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, sep, b = part.partition("-")
        if not sep:
            raise argparse.ArgumentTypeError(f"hole {part!r} is not START-END")
        start, end = parseSize(a), parseSize(b)
        holes.append((start // pageSize, -(-end // pageSize)))
    return holes


def defaultHoles(memoryBytes: int, pageSize: int) -> list[tuple[int, int]]:
    """
    A PC's legacy hole (640 KiB to 1 MiB) and a reserved MiB in the middle
    (ACPI tables, say).
    """
    middle = memoryBytes // 2
    return [(0xA0000 // pageSize, -(-0x100000 // pageSize)),
            (middle // pageSize, (middle + 2**20) // pageSize)]


def buildParser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netdump-sim",
        description="Emulate a Linux machine that crashes and sends its memory to a netdump "
                    "server (Red Hat netdump protocol), or verify a vmcore such a server wrote.",
    )
    p.add_argument("--server", default="127.0.0.1", help="netdump server address [127.0.0.1]")
    p.add_argument("--port", type=int, default=6666, help="netdump server port [6666]")
    p.add_argument("--bind", default="127.0.0.1",
                   help="this client's address (the server keys dumps by it) [127.0.0.1]")
    p.add_argument("--client-port", type=int, default=0,
                   help="this client's netdump port (0: any free one) [0]")
    p.add_argument("--log-port", type=int, default=0, help="its console log port (0: any) [0]")
    p.add_argument("--machine", choices=sorted(MACHINES), default="x86_64")
    p.add_argument("--protocol", type=int, choices=(4, 5), default=5,
                   help="highest protocol version: 5 answers holes with RESERVED, 4 with "
                        "zero pages [5]")
    p.add_argument("--legacy", action="store_true",
                   help="early RHEL3 START (no machine, no magic)")
    p.add_argument("--memory", default="256M", help="physical memory size [256M]")
    p.add_argument("--page-size", default="4K", help="page size: 4K, 16K, 64K... [4K]")
    p.add_argument("--holes", default=None,
                   help="reserved ranges as START-END byte sizes, comma-separated "
                        "(e.g. 640K-1M,128M-129M) [a PC's: 640K-1M and 1M in the middle]; "
                        "'' for none")
    p.add_argument("--zero-fraction", type=float, default=0.1,
                   help="fraction of RAM pages that are all zero [0.1]")
    p.add_argument("--drop", type=float, default=0.0,
                   help="probability of dropping each reply fragment [0]")
    p.add_argument("--seed", type=int, default=1, help="page contents seed [1]")
    p.add_argument("--magic", default="1111111111111111",
                   help="the client's 64-bit netdump magic, hex [1111111111111111]")
    p.add_argument("--log-file", default=None,
                   help="console text to send before crashing [a generated oops]")
    p.add_argument("--idle-timeout", type=float, default=0,
                   help="give up after this many seconds without a request (the kernel "
                        "waits forever) [0: forever]")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar [when stderr is a terminal]")
    p.add_argument("--gso", action=argparse.BooleanOptionalAction, default=True,
                   help="send a page's fragments with one UDP_SEGMENT send (the server still "
                        "receives one datagram per fragment) [on where supported]")
    p.add_argument("--stats", action="store_true",
                   help="print a JSON line of figures at the end (for benchmarks)")
    p.add_argument("--verify", metavar="DIR", default=None,
                   help="do not crash: check DIR/vmcore against the memory these options "
                        "describe")
    return p


def memoryFrom(args: argparse.Namespace) -> tuple[Memory, int, int, int]:
    pageSize = parseSize(args.page_size)
    if pageSize < 1024 or pageSize & (pageSize - 1):
        raise SystemExit("netdump-sim: --page-size must be a power of two >= 1K")
    total = parseSize(args.memory)
    nrPages = total // pageSize
    if nrPages <= 0:
        raise SystemExit("netdump-sim: --memory must be at least one page")
    holes = defaultHoles(total, pageSize) if args.holes is None else _holes(args.holes, pageSize)
    machine, pageOffset, task = MACHINES[args.machine]
    memory = Memory(nrPages, pageSize, holes, args.zero_fraction, args.seed)
    return memory, machine, pageOffset, task


def main(argv: Sequence[str] | None = None) -> int:
    args = buildParser().parse_args(argv)
    if not 0 <= args.drop < 1 or not 0 <= args.zero_fraction <= 1:
        print("netdump-sim: --drop and --zero-fraction are fractions", file=sys.stderr)
        return 2
    memory, machine, pageOffset, task = memoryFrom(args)
    showProgress = sys.stderr.isatty() if args.progress is None else args.progress
    if args.verify:
        ramPages = sum(b - a for a, b in memory.ramRanges())
        if args.legacy:
            task = 0  # a legacy START carries no task_struct
        return verify(args.verify, memory, machine, task, Progress(ramPages, showProgress),
                      reservedHoles=args.protocol >= 5 and not args.legacy)
    client = SimClient(memory, machine, args.protocol, int(args.magic, 16), args.legacy,
                       args.drop, pageOffset=pageOffset, taskStruct=task)
    if args.log_file:
        with open(args.log_file, "rb") as f:
            logText = f.read()
    else:
        logText = DEFAULT_LOG.format(mem=memory.ramPages() * memory.pageSize // 1024).encode()
    try:
        code = run(client, (args.server, args.port), args.bind, args.client_port, args.log_port,
                   logText, args.idle_timeout, Progress(memory.nrPages, showProgress), args.gso)
        if args.stats:
            usage = os.times()
            print(json.dumps({
                "pages": client.servedCount, "requests": client.requests,
                "dropped": client.dropped, "first_mem": client.firstMem,
                "last_mem": client.lastMem, "cpu": usage.user + usage.system,
            }))
        return code
    except OSError as e:
        print(f"netdump-sim: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
