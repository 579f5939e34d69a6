"""
The netdump wire format: a pure codec, no I/O.

A netdump server sends 24-byte requests (L{Request}); crashed clients send
replies with a 13-byte header and a payload (L{Reply}).  The same UDP port
also receives console text: netdump's own log stream (REPLY_LOG replies)
and Linux netconsole, plain or extended (L{ExtendedRecord}).  L{classify}
tells them apart.  Every decoder is bounded by the bytes it is given and
raises L{WireError}, and only that, on bad input.

All integers are big-endian.  Facts and sources: docs/netdump-protocol.md
and the project's shared specs.
"""

from __future__ import annotations

import re
import struct
from typing import Final

import attrs

__all__ = [
    "COMM",
    "REPLY",
    "ExtendedRecord",
    "Reply",
    "Request",
    "StartInfo",
    "WireError",
    "classify",
    "decodeExtended",
    "decodeStart",
    "encodeStart",
    "registersFromReply",
]


class WireError(ValueError):
    """
    Bytes that are not a valid message of the kind asked for.
    """


class COMM:
    """
    Request commands (server to client).
    """

    NONE: Final = 0
    SEND_MEM: Final = 1
    EXIT: Final = 2
    REBOOT: Final = 3
    HELLO: Final = 4
    GET_NR_PAGES: Final = 5
    GET_PAGE_SIZE: Final = 6
    START_NETDUMP_ACK: Final = 7
    GET_REGS: Final = 8
    SHOW_STATE: Final = 9

    LAST: Final = 9


class REPLY:
    """
    Reply codes (client to server).
    """

    NONE: Final = 0
    ERROR: Final = 1
    LOG: Final = 2
    MEM: Final = 3
    RESERVED: Final = 4
    HELLO: Final = 5
    NR_PAGES: Final = 6
    PAGE_SIZE: Final = 7
    START_NETDUMP: Final = 8
    END_NETDUMP: Final = 9
    REGS: Final = 10
    MAGIC: Final = 11
    SHOW_STATE: Final = 12

    LAST: Final = 12

    NAMES: Final = {
        0: "NONE", 1: "ERROR", 2: "LOG", 3: "MEM", 4: "RESERVED", 5: "HELLO",
        6: "NR_PAGES", 7: "PAGE_SIZE", 8: "START_NETDUMP", 9: "END_NETDUMP",
        10: "REGS", 11: "MAGIC", 12: "SHOW_STATE",
    }


#: ELF machine numbers a client announces in its START reply.
EM_386: Final = 3
EM_PPC64: Final = 21
EM_IA_64: Final = 50
EM_X86_64: Final = 62

#: The protocol version this server speaks (sent in START_NETDUMP_ACK).
SERVER_VERSION: Final = 5
#: The version of replies and of clients that do not negotiate.
BASE_VERSION: Final = 4

REQUEST_SIZE: Final = 24
HEADER_SIZE: Final = 13
#: Largest payload of a netdump reply (one page fragment).
FRAGMENT_SIZE: Final = 1024
#: Largest log payload of any known client (RHEL3 sends 1447 bytes).
MAX_LOG_PAYLOAD: Final = 1447

_REQUEST = struct.Struct(">QIIII")
_HEADER = struct.Struct(">BIII")

REGS_TEXT: Final = b"Sending register info.\n"
LEGACY_START_TEXT: Final = b"NETDUMP start, waiting for start-ACK.\n"


@attrs.frozen
class Request:
    """
    A request from server to client, 24 bytes on the wire.

    @ivar magic: the client's 64-bit magic (Red Hat clients ignore it).
    @ivar nr: the sequence number, echoed in the replies.
    @ivar command: a L{COMM} value.
    @ivar arg: the C{from} field: a page frame number for SEND_MEM, the
        server's protocol version for START_NETDUMP_ACK.
    @ivar to: unused by the clients.
    """

    magic: int
    nr: int
    command: int
    arg: int = 0
    to: int = 0

    def toBytes(self) -> bytes:
        return _REQUEST.pack(self.magic, self.nr, self.command, self.arg, self.to)

    @classmethod
    def fromBytes(cls, data: bytes) -> Request:
        """
        @raise WireError: not exactly 24 bytes, or an unknown command.
        """
        if len(data) != REQUEST_SIZE:
            raise WireError(f"a request is {REQUEST_SIZE} bytes, not {len(data)}")
        magic, nr, command, arg, to = _REQUEST.unpack(data)
        if command > COMM.LAST:
            raise WireError(f"unknown command {command}")
        return cls(magic, nr, command, arg, to)


def encodeRequest(magic: int, nr: int, command: int, arg: int = 0) -> bytes:
    """
    The 24 bytes of a request, without building a L{Request} (hot path).
    """
    return _REQUEST.pack(magic, nr, command, arg, 0)


@attrs.frozen
class Reply:
    """
    A reply from client to server: 13-byte header and payload.

    @ivar version: the protocol version byte.
    @ivar nr: the request's sequence number (0 for LOG and END_NETDUMP; the
        ELF machine for START_NETDUMP).
    @ivar code: a L{REPLY} value.
    @ivar info: code-specific: byte offset (MEM, LOG), next RAM pfn
        (RESERVED), the value asked for (NR_PAGES, PAGE_SIZE, REGS)...
    @ivar payload: the bytes after the header.
    """

    version: int
    nr: int
    code: int
    info: int
    payload: bytes = b""

    def toBytes(self) -> bytes:
        return _HEADER.pack(self.version, self.nr, self.code, self.info) + self.payload

    @classmethod
    def fromBytes(cls, data: bytes) -> Reply:
        """
        @raise WireError: shorter than the header, a version or code no
            client sends, or a payload too long for its code.
        """
        if len(data) < HEADER_SIZE:
            raise WireError(f"a reply is at least {HEADER_SIZE} bytes, not {len(data)}")
        version, nr, code, info = _HEADER.unpack_from(data)
        if version not in (3, 4, 5):
            raise WireError(f"unknown reply version {version}")
        if code > REPLY.LAST:
            raise WireError(f"unknown reply code {code}")
        payload = data[HEADER_SIZE:]
        limit = MAX_LOG_PAYLOAD if code == REPLY.LOG else FRAGMENT_SIZE
        if len(payload) > limit:
            raise WireError(
                f"{REPLY.NAMES[code]} payload of {len(payload)} bytes (at most {limit})"
            )
        return cls(version, nr, code, info, bytes(payload))


def encodeReply(version: int, nr: int, code: int, info: int, payload: bytes = b"") -> bytes:
    """
    The bytes of a reply, without building a L{Reply} (used by the client
    simulator on its hot path).
    """
    return _HEADER.pack(version, nr, code, info) + payload


def decodeHeader(data: bytes) -> tuple[int, int, int, int]:
    """
    The header fields (version, nr, code, info) of a datagram that
    L{classify} called a reply.  No copies: for the server's hot path.
    """
    return _HEADER.unpack_from(data)


# -- classification ---------------------------------------------------------

KIND_REPLY: Final = "reply"
KIND_REQUEST: Final = "request"
KIND_CONSOLE: Final = "console"


def classify(data: bytes) -> str:
    """
    What a datagram arriving on the netdump port is.

    A netdump reply is at least 13 bytes, has version 3, 4 or 5 in byte 0
    and a reply code of at most 12 (so bytes 5 to 7 are zero).  A 24-byte
    datagram with a valid command at offset 12 that is not a reply is a
    request (another server's traffic).  Everything else is console text
    (netconsole, plain or extended).

    @return: L{KIND_REPLY}, L{KIND_REQUEST} or L{KIND_CONSOLE}.
    """
    if len(data) >= HEADER_SIZE and data[0] in (3, 4, 5):
        if data[5] == 0 and data[6] == 0 and data[7] == 0 and data[8] <= REPLY.LAST:
            return KIND_REPLY
    if len(data) == REQUEST_SIZE and data[12:15] == b"\0\0\0" and data[15] <= COMM.LAST:
        return KIND_REQUEST
    return KIND_CONSOLE


# -- START and REGS payloads ------------------------------------------------

_START_RE = re.compile(
    rb"task_struct:0x([0-9a-fA-F]{1,16}) page_offset:0x([0-9a-fA-F]{1,16})"
    rb" netdump_magic:0x([0-9a-fA-F]{1,16})"
)


@attrs.frozen
class StartInfo:
    """
    What a client announces when it crashes (the START_NETDUMP reply).

    @ivar machine: its ELF machine (L{EM_386}...), or 0 for a legacy client.
    @ivar version: the highest protocol version it speaks.
    @ivar taskStruct: the address of the crashing task.
    @ivar pageOffset: the kernel's PAGE_OFFSET (virtual address of physical 0).
    @ivar magic: its 64-bit netdump magic, or L{None} (legacy clients).
    """

    machine: int
    version: int
    taskStruct: int = 0
    pageOffset: int = 0
    magic: int | None = None

    @property
    def legacy(self) -> bool:
        return self.machine == 0


def decodeStart(reply: Reply) -> StartInfo:
    """
    Read a START_NETDUMP reply.

    A version 5 client sends C{nr} = its ELF machine, C{info} = its highest
    version and the text C{"task_struct:0x%lx page_offset:0x%llx
    netdump_magic:0x%llx\\n"}; an early RHEL3 client sends C{nr} 0,
    C{info} 0 and C{"NETDUMP start, waiting for start-ACK.\\n"}.

    @raise WireError: not a START reply, or a v5 announcement whose text
        does not parse.
    """
    if reply.code != REPLY.START_NETDUMP:
        raise WireError(f"not a START_NETDUMP reply (code {reply.code})")
    if reply.nr == 0:
        return StartInfo(machine=0, version=BASE_VERSION)
    match = _START_RE.search(reply.payload)
    if match is None:
        raise WireError("START_NETDUMP text without task_struct/page_offset/netdump_magic")
    task, offset, magic = (int(g, 16) for g in match.groups())
    version = reply.info if reply.info else BASE_VERSION
    return StartInfo(reply.nr, version, task, offset, magic)


def encodeStart(info: StartInfo, version: int = BASE_VERSION) -> bytes:
    """
    The START_NETDUMP datagram a client sends (for the simulator and tests).
    """
    if info.legacy:
        return encodeReply(version, 0, REPLY.START_NETDUMP, 0, LEGACY_START_TEXT)
    text = (
        f"task_struct:0x{info.taskStruct:x} page_offset:0x{info.pageOffset:x} "
        f"netdump_magic:0x{info.magic or 0:x}\n"
    ).encode()
    return encodeReply(version, info.machine, REPLY.START_NETDUMP, info.version, text)


#: sizeof(elf_gregset_t) per machine.
GREGSET_SIZE: Final = {
    EM_386: 17 * 4,
    EM_X86_64: 27 * 8,
    EM_PPC64: 48 * 8,
    EM_IA_64: 128 * 8,
}


def registersFromReply(reply: Reply, machine: int) -> bytes:
    """
    The raw C{elf_gregset_t} of a REGS reply.

    The client sends "Sending register info.\\n" and then the registers in
    its own byte order, followed by a few stale bytes (a strlen bug): take
    exactly the text plus C{sizeof(elf_gregset_t)}.  (ia64's register set
    is larger than a reply can carry; what fits is kept.)

    @raise WireError: not a REGS reply, no register text, or too short.
    """
    if reply.code != REPLY.REGS:
        raise WireError(f"not a REGS reply (code {reply.code})")
    if not reply.payload.startswith(REGS_TEXT):
        raise WireError("REGS reply without its 'Sending register info.' text")
    size = GREGSET_SIZE.get(machine, 0)
    blob = reply.payload[len(REGS_TEXT) : len(REGS_TEXT) + size]
    if machine != EM_IA_64 and len(blob) < size:
        raise WireError(f"REGS reply carries {len(blob)} register bytes, not {size}")
    return blob


# -- extended netconsole ----------------------------------------------------

_EXT_RE = re.compile(
    rb"^(?:(?P<release>[^,;\n]*[^\d,;\n][^,;\n]*),)?(?P<level>\d{1,4}),(?P<seq>\d{1,20}),"
    rb"(?P<usec>\d{1,20}),(?P<flags>[^,;\n]*)(?P<extra>(?:,[^;\n]*)?);"
)
_FRAG_RE = re.compile(rb"(?:^|,)ncfrag=(\d{1,10})/(\d{1,10})(?:,|$)")


@attrs.frozen
class ExtendedRecord:
    """
    One extended netconsole datagram: C{[<release>,]<level>,<seq>,<usec>,
    <flags>[,ncfrag=<off>/<total>][,...];<text>[\\n key=value...]}.

    @ivar release: the kernel release prefix, or L{None}.
    @ivar level: the syslog level and facility number.
    @ivar seq: the record's sequence number.
    @ivar usec: the monotonic timestamp in microseconds.
    @ivar flags: C{-} or C{c} (continuation).
    @ivar fragment: C{(offset, total)} when the record is split, else
        L{None}.
    @ivar body: the bytes after C{;} (a fragment of them when split).
    """

    release: bytes | None
    level: int
    seq: int
    usec: int
    flags: bytes
    fragment: tuple[int, int] | None
    body: bytes


def decodeExtended(data: bytes) -> ExtendedRecord:
    """
    Read an extended netconsole datagram.

    @raise WireError: it has no extended header (then it is plain text).
    """
    match = _EXT_RE.match(data)
    if match is None:
        raise WireError("no extended netconsole header")
    fragment = None
    extra = match.group("extra")
    if extra:
        frag = _FRAG_RE.search(extra[1:] if extra.startswith(b",") else extra)
        if frag is not None:
            offset, total = int(frag.group(1)), int(frag.group(2))
            if total == 0 or offset >= total:
                raise WireError(f"bad ncfrag {offset}/{total}")
            fragment = (offset, total)
    body = data[match.end() :]
    if fragment is not None and fragment[0] + len(body) > fragment[1]:
        raise WireError("ncfrag fragment runs past its record's total")
    return ExtendedRecord(
        match.group("release"),
        int(match.group("level")),
        int(match.group("seq")),
        int(match.group("usec")),
        match.group("flags"),
        fragment,
        body,
    )
