"""
Tests that the protocol documents, docs/beostat-wire.md and
docs/beostat-shm.md, say what the code does: their offset tables are read
back and compared with the codec's and the shared-memory file's structs,
their constants and enumerations with the modules', the wire document's
annotated example datagram is decoded and compared field by field, and its
size budget is recomputed.  A change to either side without the other
fails here.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import struct

import attrs
from twisted.trial.unittest import SynchronousTestCase

from sysmon.beostat import reader, recv, shm, wire
from sysmon.beostat.records import (
    CPU_TICK_FIELDS,
    NET_FIELDS,
    CpuInfo,
    CpuTicks,
    FileSystem,
    Interface,
    Load,
    Memory,
    Snapshot,
)
from sysmon.beostat.send import StatusBuilder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIRE_DOC = os.path.join(ROOT, "docs", "beostat-wire.md")
SHM_DOC = os.path.join(ROOT, "docs", "beostat-shm.md")

#: The key the wire document's example datagram is signed with.
EXAMPLE_KEY = b"example-key"

_TYPES = {"B": "u8", "H": "u16", "I": "u32", "Q": "u64", "i": "i32", "f": "f32", "d": "f64"}


# -- reading the documents ---------------------------------------------------

def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table(text: str, heading: str) -> list[dict[str, str]]:
    """
    The first Markdown table after the line C{heading}, as one dict per row
    keyed by the lower-cased column titles.
    """
    lines = text.split("\n")
    start = lines.index(heading)
    index = start + 1
    while not lines[index].startswith("|"):
        if lines[index].startswith("#"):
            raise AssertionError(f"no table under {heading!r}")
        index += 1
    titles = [t.lower() for t in _cells(lines[index])]
    rows = []
    for line in lines[index + 2:]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != len(titles):
            raise AssertionError(f"{heading}: row {line!r} has {len(cells)} cells")
        rows.append(dict(zip(titles, cells)))
    return rows


def _codeBlock(text: str, after: str) -> list[str]:
    """
    The lines of the first fenced code block after the line C{after}.
    """
    lines = text.split("\n")
    index = lines.index(after)
    while not lines[index].startswith("```"):
        index += 1
    end = lines.index("```", index + 1)
    return lines[index + 1:end]


def _flat(text: str) -> str:
    """
    C{text} with every run of white space made one space, so that phrases
    wrapped over lines can be searched for.
    """
    return re.sub(r"\s+", " ", text)


def _camel(name: str) -> str:
    """
    C{swap_total} -> C{swapTotal}: a document's field name as the code's.
    """
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


# -- reading the code's structs ------------------------------------------------

def _items(fmt: str) -> list[tuple[int, int, str]]:
    """
    C{(offset, size, type)} of every item of a struct format, offsets
    computed with C{struct.calcsize} of the format's prefixes.
    """
    order, body = fmt[0], fmt[1:]
    items = []
    prefix = order
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", body):
        item = count + code
        offset = struct.calcsize(prefix)
        size = struct.calcsize(order + item)
        if code == "s":
            kind = f"byte[{count or 1}]"
        elif count and count != "1":
            kind = f"{_TYPES[code]}[{count}]"
        else:
            kind = _TYPES[code]
        items.append((offset, size, kind))
        prefix += item
    return items


def _fields(fmt: str) -> list[tuple[int, int, str]]:
    """
    Like L{_items}, but a repeated number (C{8Q}) as that many fields of
    its own, as the wire document's section tables list them.
    """
    order, body = fmt[0], fmt[1:]
    expanded = "".join(code if code == "s" else code * int(count or 1)
                       for count, code in re.findall(r"(\d*)([a-zA-Z?])", body))
    return _items(order + expanded)


def _position(text: str, rowStart: int, nameLength: int | None) -> int | None:
    """
    The offset a wire section table states: a number, or a sum of numbers,
    C{r} (the start of the row) and C{L} (the row's name length); L{None}
    for C{—} (no fixed offset).
    """
    if text == "—":
        return None
    terms = {"r": rowStart, "L": nameLength}
    return sum(terms[term] if term in terms else int(term)
               for term in (part.strip() for part in text.split("+")))


def _extent(text: str, nameLength: int | None) -> tuple[int, int]:
    """
    The least and most bytes a wire section table's size allows: a
    number, C{L} (the row's name length) or a range C{a–b}.
    """
    if text == "L":
        return nameLength, nameLength
    low, _, high = text.partition("–")
    return int(low), int(high or low)


def _docItems(rows: list[dict[str, str]]) -> list[tuple[int, int, str]]:
    # char[N] is the document's name for a text field of byte[N].
    return [(int(r["offset"]), int(r["size"]), r["type"].replace("char[", "byte["))
            for r in rows]


def _unpack(kind: str, data: bytes, offset: int, order: str = "<"):
    """
    The value of a field of the document's type C{kind} at C{offset}.
    """
    match = re.fullmatch(r"(byte|char|\w+)\[(\d+)\]", kind)
    if match:
        base, count = match.group(1), int(match.group(2))
        if base in ("byte", "char"):
            return data[offset:offset + count]
        code = {v: k for k, v in _TYPES.items()}[base]
        return struct.unpack_from(f"{order}{count}{code}", data, offset)
    code = {v: k for k, v in _TYPES.items()}[kind]
    return struct.unpack_from(order + code, data, offset)[0]


def _leb128(data: bytes) -> list[int]:
    """
    Every unsigned LEB128 number in C{data}, which must hold whole numbers.
    """
    values = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value = shift = 0
    if shift:
        raise AssertionError(f"{data.hex(' ')}: a varint is cut short")
    return values


# -- the wire document -----------------------------------------------------------

def _sections(data: bytes) -> dict[int, bytes]:
    """
    The bodies of a datagram's sections, by section type.
    """
    end = wire.HEADER_SIZE + struct.unpack_from(">H", data, 46)[0]
    offset = wire.HEADER_SIZE
    bodies = {}
    while offset < end:
        kind, length = struct.unpack_from(">HH", data, offset)
        bodies[kind] = data[offset + 4:offset + 4 + length]
        offset += 4 + length
    return bodies


def _distinctStatus() -> wire.Message:
    """
    A status message whose every field has a value of its own, so that a
    field read from the wrong place cannot pass for the right one.
    """
    return wire.Message(
        type=wire.STATUS, node=-7, bootId=bytes(range(100, 116)), sequence=0x01020304,
        timestamp=1_712_345_678.5, interval=2.5, part=1, parts=3, multicast=True,
        hostname="host.example", cpuInfo=CpuInfo(12, 2250.5, "Model Name"),
        cpuTotal=CpuTicks(*range(1001, 1009)),
        cpus=wire.CpuBlock.fromTicks(9, 4, 77, (
            CpuTicks(*range(2001, 2009)), CpuTicks(*range(3001, 3009)))),
        memory=Memory(*range(40_001, 40_008)),
        load=Load(1.5, 2.25, 3.125, 51, 52, 53),
        net=wire.NetBlock(total=6, first=3, interfaces=(
            Interface("eth3", *range(5001, 5009)), Interface("ib10", *range(6001, 6009)))),
        rootfs=FileSystem(*range(70_001, 70_007)),
    )


class WireHeaderTests(SynchronousTestCase):
    """
    The wire document's header, section header and constants are the
    codec's.
    """

    def setUp(self) -> None:
        self.text = _read(WIRE_DOC)

    def test_headerOffsets(self):
        """
        The header table's offsets, sizes and types are those of
        C{wire._HEADER}, field after field, 48 bytes in all.
        """
        rows = _table(self.text, "### Header")
        self.assertEqual(_docItems(rows), _items(wire._HEADER.format))
        last = rows[-1]
        self.assertEqual(int(last["offset"]) + int(last["size"]), wire.HEADER_SIZE)
        self.assertIn(f"| header {wire.HEADER_SIZE} bytes |", self.text)

    def test_headerFieldNames(self):
        """
        Each header field the table names is where the encoder puts it: a
        message with distinct values, encoded, reads back field by field at
        the table's offsets with the table's types.
        """
        message = _distinctStatus()
        data = wire.encode(message, key=b"k")
        payload = len(data) - wire.HEADER_SIZE - wire.SIGNATURE_SIZE
        expected = {
            "magic": wire.MAGIC, "version": wire.VERSION, "type": message.type,
            "flags": wire.FLAG_SIGNED | wire.FLAG_MULTICAST, "reserved": 0,
            "node": message.node, "boot_id": message.bootId, "sequence": message.sequence,
            "timestamp": round(message.timestamp * 1_000_000),
            "interval": round(message.interval * 1000), "part": message.part,
            "parts": message.parts, "payload_length": payload,
        }
        rows = _table(self.text, "### Header")
        self.assertEqual([r["field"] for r in rows], list(expected))
        for row in rows:
            value = _unpack(row["type"], data, int(row["offset"]), ">")
            self.assertEqual(value, expected[row["field"]], row["field"])

    def test_sectionHeader(self):
        """
        The section header table is C{wire._SECTION}: type, then body
        length, two big-endian u16.
        """
        rows = _table(self.text, "## Sections")
        self.assertEqual(_docItems(rows), _items(wire._SECTION.format))
        self.assertEqual([r["field"] for r in rows], ["section_type", "section_length"])

    def test_constants(self):
        """
        Flags, message types, section type codes, port, group, TTL and the
        datagram limit are the codec's.
        """
        flags = {r["name"]: int(r["value"], 16) for r in _table(self.text, "### Flags")}
        self.assertEqual(flags, {"SIGNED": wire.FLAG_SIGNED, "MULTICAST": wire.FLAG_MULTICAST})
        for row in _table(self.text, "### Flags"):
            self.assertEqual(1 << int(row["bit"]), int(row["value"], 16))
        types = {int(r["value"]): r["name"] for r in _table(self.text, "### Message types")}
        self.assertEqual(types, wire._TYPES)
        sections = {int(r["code"]): r["name"] for r in _table(self.text, "### Section types")}
        self.assertEqual(sections, {getattr(wire, f"SEC_{name.upper()}"): name
                                    for name in sections.values()})
        self.assertEqual(set(sections), set(wire._READERS))
        flat = _flat(self.text)
        self.assertIn(f"port **{wire.DEFAULT_PORT}** (0x{wire.DEFAULT_PORT:x})", flat)
        self.assertIn(f"group **{wire.DEFAULT_GROUP}**", flat)
        self.assertIn("**TTL 1**", flat)
        self.assertIn(f"**{wire.MAX_DATAGRAM} bytes**", flat)
        self.assertIn(f'`"{wire.MAGIC.decode()}"`', flat)

    def test_version(self):
        """
        The document is about the codec's version, and a datagram of the
        version before it is refused with the message the document quotes.
        """
        self.assertTrue(self.text.startswith(f"# beostat wire format, version {wire.VERSION} "))
        self.assertIn(f"This is version **{wire.VERSION}**.", self.text)
        [row] = [r for r in _table(self.text, "### Header") if r["field"] == "version"]
        self.assertEqual(row["meaning"], str(wire.VERSION))
        old = bytearray(wire.encode(_distinctStatus()))
        old[4] = wire.VERSION - 1
        error = self.assertRaises(wire.WireError, wire.decode, bytes(old))
        self.assertIn(f'(recvstats counts them as bad: "{error}")', _flat(self.text))
        self.assertIn(f"| `version` ≠ {wire.VERSION} (version {wire.VERSION - 1} included) |",
                      self.text)

    def test_varintExamples(self):
        """
        Every example in the varint table is how the codec writes that
        number, and reads back as it.
        """
        lines = [line for line in _codeBlock(self.text, "## Varints") if line.strip()]
        self.assertGreater(len(lines), 4)
        for line in lines:
            number, encoded = (part.strip() for part in line.split("→"))
            value = (1 << 64) - 1 if number == "2^64 − 1" else int(number)
            self.assertEqual(wire._varints([value]).hex(" "), encoded, number)
            raw = bytes.fromhex(encoded)
            values, end = wire._readVarints(raw, 0, len(raw), 1)
            self.assertEqual((list(values), end), ([value], len(raw)))

    def test_varintErrors(self):
        """
        What the document calls a varint error is one, and the over-long
        form it allows is read.
        """
        def read(hexText: str) -> int:
            raw = bytes.fromhex(hexText)
            values, end = wire._readVarints(raw, 0, len(raw), 1)
            return values[0]

        self.assertRaises(wire.WireError, read, "ff ff ff ff ff ff ff ff ff 81 00")
        self.assertRaises(wire.WireError, read, "ff ff ff ff ff ff ff ff ff 02")
        self.assertRaises(wire.WireError, read, "80 80")
        self.assertEqual(read("80 00"), 0)
        self.assertEqual(wire._varints([-5, 1 << 70]), wire._varints([0, (1 << 64) - 1]))


class WireSectionTests(SynchronousTestCase):
    """
    Every section's body table lists the fields the encoder writes, in its
    order, at its offsets and with its types and sizes.
    """

    def setUp(self) -> None:
        self.text = _read(WIRE_DOC)

    def _walk(self, rows: list[dict[str, str]], body: bytes):
        """
        Read C{body} as the table C{rows} describes: the fields without
        C{[i]} once, then the C{[i]} fields as a group repeated to the end.
        Each field's stated offset (from the body's start, or for a C{[i]}
        field C{r + ...} from its row's start, C{L} its name length; C{—}
        for none) and size (bytes, C{L}, or a range C{a–b}) must be where
        and how long the field really is.
        """
        head = [r for r in rows if "[i]" not in r["field"]]
        group = [r for r in rows if "[i]" in r["field"]]
        offset = 0
        rowStart = 0

        def field(row: dict[str, str], fields: dict):
            nonlocal offset
            name, kind = row["field"].split(".", 1)[-1], row["type"]
            start = offset
            length = fields.get("nameLength")
            stated = _position(row["offset"], rowStart, length)
            if stated is not None:
                self.assertEqual(stated, start, f"offset of {row['field']}")
            if kind == "varint":
                end = offset
                while body[end] & 0x80:
                    end += 1
                value = _leb128(body[offset:end + 1])[0]
                offset = end + 1
            elif kind == "utf-8":
                value = body[offset:].decode("utf-8")
                offset = len(body)
            elif kind == "byte[L]":
                value = body[offset:offset + length].decode("utf-8", "surrogateescape")
                offset += length
            else:
                value = _unpack(kind, body, offset, ">")
                offset += struct.calcsize(">" + {v: k for k, v in _TYPES.items()}[kind])
            low, high = _extent(row["size"], length)
            self.assertTrue(low <= offset - start <= high,
                            f"{row['field']} is {offset - start} bytes, not {row['size']}")
            fields[_camel(name)] = value

        top: dict = {}
        for row in head:
            field(row, top)
        if not group and offset != len(body):
            self.fail(f"the table reads {offset} bytes of a {len(body)}-byte body")
        groups = []
        while offset < len(body):
            rowStart = offset
            values: dict = {}
            for row in group:
                field(row, values)
            groups.append(values)
        return top, groups

    def test_bodies(self):
        """
        Each section of a message with distinct values, read by its table,
        gives back the message's values: field order, offsets, types, sizes
        and names.
        """
        message = _distinctStatus()
        bodies = _sections(wire.encode(message))
        mhz = struct.unpack(">f", struct.pack(">f", message.cpuInfo.mhz))[0]
        expected = {
            "host": ({"hostname": message.hostname}, []),
            "cpuinfo": ({**attrs.asdict(message.cpuInfo), "mhz": mhz}, []),
            "cputotal": (dict(message.cpuTotal._asdict()), []),
            "cpus": ({"total": 9, "first": 4, "count": 2, "base": 77},
                     [dict(t._asdict()) for t in message.cpus.ticks]),
            "memory": (message.memory._asdict(), []),
            "load": (message.load._asdict(), []),
            "net": ({"total": 6, "first": 3, "count": 2},
                    [{"nameLength": len(i.name), **i._asdict()}
                     for i in message.net.interfaces]),
            "rootfs": (message.rootfs._asdict(), []),
        }
        codes = {r["name"]: int(r["code"]) for r in _table(self.text, "### Section types")}
        self.assertEqual(set(codes), set(expected))
        for name, code in codes.items():
            rows = _table(self.text, f"### {name} ({code})")
            self.assertEqual(self._walk(rows, bodies[code]), expected[name], name)

    def test_fieldOrders(self):
        """
        The counter tables follow the records' field orders
        (C{CPU_TICK_FIELDS}, C{NET_FIELDS}, L{Memory}, L{FileSystem},
        L{Load}) with the codec's types: fixed-width u64 (u32 for load's
        counts) everywhere but the per-CPU rows, which are varints.
        """
        def names(heading, kind, prefix=""):
            rows = [r for r in _table(self.text, heading) if r["field"].startswith(prefix)]
            return [_camel(r["field"][len(prefix):]) for r in rows if r["type"] == kind]

        self.assertEqual(names("### cputotal (3)", "u64"), list(CPU_TICK_FIELDS))
        self.assertEqual(names("### cpus (4)", "varint", "cpu[i]."), list(CPU_TICK_FIELDS))
        self.assertEqual(names("### net (7)", "u64", "interface[i]."), list(NET_FIELDS))
        self.assertEqual(names("### memory (5)", "u64"), list(Memory._fields))
        self.assertEqual(names("### rootfs (8)", "u64"),
                         list(FileSystem._fields))
        self.assertEqual(names("### load (6)", "f32"), ["one", "five", "fifteen"])
        self.assertEqual(names("### load (6)", "u32"), ["running", "total", "lastPid"])
        # Varints are the per-CPU rows' alone.
        for row in _table(self.text, "### Section types"):
            heading = f"### {row['name']} ({row['code']})"
            varints = [r["field"] for r in _table(self.text, heading) if r["type"] == "varint"]
            self.assertEqual(varints, [f"cpu[i].{n}" for n in CPU_TICK_FIELDS]
                             if row["name"] == "cpus" else [], heading)

    #: The fixed-size sections and the codec's struct for each.
    FIXED = {"cputotal": wire._TICKS, "memory": wire._MEMORY, "load": wire._LOAD,
             "rootfs": wire._ROOTFS}

    def test_fixedSizes(self):
        """
        The fixed-size sections' tables are their structs (offsets, sizes,
        types, field after field), each says its body is exactly the
        struct's size, and so does the sections' rule; the fixed heads of
        cpuinfo, cpus and net, and the interface row's counters, are
        their structs too.
        """
        codes = {r["name"]: int(r["code"]) for r in _table(self.text, "### Section types")}
        rule = []
        for name, layout in self.FIXED.items():
            heading = f"### {name} ({codes[name]})"
            rows = _table(self.text, heading)
            self.assertEqual(_docItems(rows), _fields(layout.format), name)
            self.assertEqual(int(rows[-1]["offset"]) + int(rows[-1]["size"]), layout.size)
            intro = _flat(self.text[self.text.index(heading):])
            self.assertTrue(intro.startswith(f"{heading} Body: exactly {layout.size} bytes,"),
                            intro[:80])
            rule.append(f"{name} {layout.size} bytes")
        self.assertIn("Four sections have a fixed size: {}, {}, {} and {}.".format(*rule),
                      _flat(self.text))
        for heading, layout in (("### cpuinfo (2)", wire._CPUINFO), ("### cpus (4)", wire._CPUS),
                                ("### net (7)", wire._NET)):
            rows = [r for r in _table(self.text, heading)
                    if r["type"] != "utf-8" and "[i]" not in r["field"]]
            self.assertEqual(_docItems(rows), _fields(layout.format), heading)
        counters = [r for r in _table(self.text, "### net (7)") if r["type"] == "u64"]
        self.assertEqual(sum(int(r["size"]) for r in counters), wire._COUNTERS.size)
        self.assertEqual(len(counters), len(_fields(wire._COUNTERS.format)))
        self.assertIn(f"a row is {1 + wire._COUNTERS.size} + L bytes", _flat(self.text))

    def test_fixedSizeEnforced(self):
        """
        As the document says, a fixed-size section one byte longer or
        shorter than its size makes the datagram invalid.
        """
        data = wire.encode(_distinctStatus())
        for name, layout in self.FIXED.items():
            code = getattr(wire, f"SEC_{name.upper()}")
            for delta in (-1, 1):
                sections = []
                for kind, body in _sections(data).items():
                    if kind == code:
                        body = body[:layout.size - 1] if delta < 0 else body + b"\0"
                    sections.append(struct.pack(">HH", kind, len(body)) + body)
                payload = b"".join(sections)
                bad = data[:46] + struct.pack(">H", len(payload)) + payload
                self.assertRaises(wire.WireError, wire.decode, bad)
                # The same bytes with the right length are valid.
                if delta > 0:
                    good = bad[:46] + struct.pack(">H", len(payload) - 1) + b"".join(
                        s if s[:2] != struct.pack(">H", code) else
                        struct.pack(">HH", code, layout.size) + s[4:4 + layout.size]
                        for s in sections)
                    wire.decode(good)

    def test_clamping(self):
        """
        Senders clamp integers into their field's range, as the conventions
        say: negative values to 0, larger ones to the type's maximum.
        """
        self.assertIn("(2⁶⁴−1 for `u64` and `varint`, 2³²−1 for `u32`, 65535 for cpuinfo's "
                      "count)", _flat(self.text))
        u64, u32 = (1 << 64) - 1, (1 << 32) - 1
        message = attrs.evolve(
            _distinctStatus(), cpuInfo=CpuInfo(70_000, 1.0, "m"),
            cpuTotal=CpuTicks(-1, 1 << 70, 0, 0, 0, 0, 0, 0),
            cpus=wire.CpuBlock.fromTicks(9, 4, 77, [CpuTicks(-1, 1 << 70, 0, 0, 0, 0, 0, 0)]),
            memory=Memory(-1, 1 << 70, 0, 0, 0, 0, 0), load=Load(0.0, 0.0, 0.0, -1, 1 << 40, 0),
            net=wire.NetBlock(6, 3, (Interface("e", -1, 1 << 70, 0, 0, 0, 0, 0, 0),)),
            rootfs=FileSystem(-1, 1 << 70, 0, 0, 0, 0))
        decoded = wire.decode(wire.encode(message))
        self.assertEqual(decoded.cpuInfo.count, 65535)
        self.assertEqual(decoded.cpuTotal[:2], (0, u64))
        self.assertEqual(tuple(decoded.cpus.values[:2]), (0, u64))
        self.assertEqual((decoded.memory.total, decoded.memory.free), (0, u64))
        self.assertEqual((decoded.load.running, decoded.load.total), (0, u32))
        self.assertEqual(decoded.net.interfaces[0].counters()[:2], (0, u64))
        self.assertEqual((decoded.rootfs.blockSize, decoded.rootfs.blocks), (0, u64))


# -- the example datagram ------------------------------------------------------------

def _exampleRows(text: str) -> list[dict[str, str]]:
    return _table(text, "## Example datagram")


def _exampleBytes(rows: list[dict[str, str]]) -> bytes:
    return b"".join(bytes.fromhex(r["bytes"].strip("`")) for r in rows)


def _values(value: str):
    """
    The values a row of the annotated example states: a quoted text, or
    the numbers before any parenthesized comment.
    """
    if value.startswith('"'):
        return value[1:value.index('"', 1)]
    numbers = value.split(" (")[0].split()
    return tuple(int(n, 0) if re.fullmatch(r"-?(0x[0-9a-f]+|\d+)", n) else float(n)
                 for n in numbers)


def _rowValue(kind: str, raw: bytes):
    """
    The value the bytes of a row hold, read as the row's type says.
    """
    if kind == "utf-8":
        return raw.decode("utf-8")
    if kind.startswith("byte["):
        return raw
    match = re.fullmatch(r"(\d+) × (\w+)", kind)
    count, base = (int(match.group(1)), match.group(2)) if match else (1, kind)
    if base == "varint":
        values = tuple(_leb128(raw))
    else:
        code = {v: k for k, v in _TYPES.items()}[base]
        values = struct.unpack(f">{count}{code}", raw)
    if len(values) != count:
        raise AssertionError(f"{raw.hex(' ')} is not {kind}")
    return values


class ExampleDatagramTests(SynchronousTestCase):
    """
    The annotated example datagram is a real one: it decodes to what the
    document states, and the code produces exactly these bytes.
    """

    def setUp(self) -> None:
        self.text = _read(WIRE_DOC)
        self.rows = _exampleRows(self.text)
        self.data = _exampleBytes(self.rows)

    def test_dumpMatchesTable(self):
        """
        The hex dump and the annotated table hold the same bytes, and the
        table's offsets run on without gaps.
        """
        dumped = bytearray()
        for line in _codeBlock(self.text, "## Example datagram"):
            match = re.match(r"([0-9a-f]{8}): ((?:[0-9a-f]{2} ){0,15}[0-9a-f]{2})", line)
            self.assertIsNotNone(match, line)
            self.assertEqual(int(match.group(1), 16), len(dumped))
            dumped += bytes.fromhex(match.group(2))
        self.assertEqual(bytes(dumped), self.data)
        offset = 0
        for row in self.rows:
            self.assertEqual(int(row["offset"]), offset, row["field"])
            offset += len(bytes.fromhex(row["bytes"].strip("`")))
        self.assertIn(f"{len(self.data)} bytes.", self.text)

    def test_decodes(self):
        """
        C{wire.decode} with the document's key accepts the datagram, and
        every row's stated value is both what its bytes hold, read as its
        type, and what the decoded message has for that field.
        """
        message = wire.decode(self.data, key=EXAMPLE_KEY)
        header = {
            "magic": ("BEOS",), "version": (wire.VERSION,), "type": (message.type,),
            "flags": ((wire.FLAG_SIGNED if message.signed else 0)
                      | (wire.FLAG_MULTICAST if message.multicast else 0),),
            "reserved": (0,), "node": (message.node,),
            "boot_id": (int.from_bytes(message.bootId, "big"),),
            "sequence": (message.sequence,), "timestamp": (round(message.timestamp * 1e6),),
            "interval": (round(message.interval * 1000),), "part": (message.part,),
            "parts": (message.parts,),
            "payload_length": (len(self.data) - wire.HEADER_SIZE - wire.SIGNATURE_SIZE,),
        }
        cpus, net = message.cpus, message.net
        sections = {
            "host": {"hostname": message.hostname},
            "cpuinfo": attrs.asdict(message.cpuInfo),
            "cputotal": dict(message.cpuTotal._asdict()),
            "memory": message.memory._asdict(),
            "load": message.load._asdict(),
            "rootfs": message.rootfs._asdict(),
            "cpus": {"total": cpus.total, "first": cpus.first, "count": len(cpus.ticks),
                     "base": cpus.base},
            "net": {"total": net.total, "first": net.first, "count": len(net.interfaces)},
        }
        checked = 0
        for index, row in enumerate(self.rows):
            label, kind = row["field"], row["type"]
            raw = bytes.fromhex(row["bytes"].strip("`"))
            if label == "signature":
                continue  # test_signature
            stated = _values(row["value"])
            held = _rowValue(kind, raw)
            if isinstance(held, bytes):
                held = (held.decode("ascii"),) if isinstance(stated, str) else (
                    int.from_bytes(held, "big"),)
            if isinstance(stated, str):
                stated = (stated,)
                held = held if isinstance(held, tuple) else (held,)
            self.assertEqual(held, stated, label)
            if label in header:
                expected = header[label]
            elif label == "section_type":
                name = row["value"].split("(")[1].rstrip(")")
                expected = (getattr(wire, f"SEC_{name.upper()}"),)
                following = self.rows[index + 2:]
                self.assertTrue(following[0]["field"].startswith(name), label)
            elif label == "section_length":
                size = 0
                for later in self.rows[index + 1:]:
                    if later["field"] in ("section_type", "signature"):
                        break
                    size += len(bytes.fromhex(later["bytes"].strip("`")))
                expected = (size,)
            elif m := re.fullmatch(r"cpu\[(\d+)\]", label):
                expected = cpus.ticks[int(m.group(1)) - cpus.first].astuple()
            elif m := re.fullmatch(r"interface\[(\d+)\](?:\.(\w+)| counters)", label):
                interface = net.interfaces[int(m.group(1)) - net.first]
                name = m.group(2)
                if name is None:
                    expected = interface.counters()
                elif name == "name":
                    expected = (interface.name,)
                elif name == "name_length":
                    expected = (len(interface.name.encode()),)
                else:
                    expected = (getattr(interface, _camel(name)),)
            else:
                section, *names = label.split()
                fields = sections[section]
                expected = tuple(fields[_camel(n)] for n in names) if names else tuple(
                    fields.values())
            self.assertEqual(stated, expected, label)
            checked += 1
        self.assertEqual(checked, len(self.rows) - 1)

    def test_rowsFollowTables(self):
        """
        Each annotated row of a section field is at the offset, and of the
        type, that the section's table gives that field, so that a row
        cannot be labelled with another field of the same value.
        """
        codes = {r["name"]: r["code"] for r in _table(self.text, "### Section types")}
        section = bodyStart = rowStart = nameLength = None
        checked = 0
        for row in self.rows:
            label, at = row["field"], int(row["offset"])
            if label == "section_type":
                section = row["value"].split("(")[1].rstrip(")")
                continue
            if label == "section_length":
                bodyStart = at + 2
                continue
            if section is None or label == "signature":
                continue
            table = {r["field"]: r for r in _table(self.text, f"### {section} ({codes[section]})")}
            if m := re.fullmatch(r"(\w+)\[(\d+)\]\.(\w+)", label):
                name = f"{m.group(1)}[i].{m.group(3)}"
                if m.group(3) == "name_length":
                    rowStart = at - bodyStart
                    nameLength = _values(row["value"])[0]
            elif re.fullmatch(r"cpu\[\d+\]", label):
                self.assertEqual(row["type"], "8 × varint")
                self.assertEqual({table[f"cpu[i].{f}"]["type"] for f in CPU_TICK_FIELDS},
                                 {"varint"})
                continue
            else:
                prefix, name = label.split(" ", 1)
                self.assertEqual(prefix, section, label)
            self.assertIn(name, table, label)
            stated = _position(table[name]["offset"], rowStart, nameLength)
            self.assertEqual(stated, at - bodyStart, label)
            self.assertEqual(row["type"], table[name]["type"].replace("[L]", f"[{nameLength}]"),
                             label)
            checked += 1
        self.assertGreater(checked, 40)

    def test_signature(self):
        """
        The trailer is the HMAC-SHA-256, with the document's key, of the
        bytes the document says; another key is refused, and a receiver
        without a key decodes the datagram all the same.
        """
        last = self.rows[-1]
        self.assertEqual(last["field"], "signature")
        self.assertIn(f"`{EXAMPLE_KEY.decode()}`", last["value"])
        first, end = map(int, re.search(r"bytes (\d+)–(\d+)", last["value"]).groups())
        self.assertEqual((first, end + 1), (0, len(self.data) - wire.SIGNATURE_SIZE))
        self.assertEqual(bytes.fromhex(last["bytes"].strip("`")),
                         hmac.digest(EXAMPLE_KEY, self.data[:end + 1], hashlib.sha256))
        self.assertRaises(wire.BadSignature, wire.decode, self.data, b"another-key")
        self.assertEqual(wire.decode(self.data), attrs.evolve(
            wire.decode(self.data, EXAMPLE_KEY), signed=False))

    def test_producedByTheCode(self):
        """
        sendstats' L{StatusBuilder}, given the values the datagram carries,
        makes exactly these bytes as its first status: the example is what
        the code sends, section order included.
        """
        message = wire.decode(self.data, key=EXAMPLE_KEY)
        self.assertEqual(message.sequence, 1)
        builder = StatusBuilder(message.node, message.bootId, message.hostname,
                                message.interval)
        snapshot = Snapshot(
            cpuInfo=message.cpuInfo, cpuTotal=message.cpuTotal, cpus=message.cpus.ticks,
            memory=message.memory, load=message.load, interfaces=message.net.interfaces,
            rootfs=message.rootfs)
        built = builder.build(snapshot, message.timestamp, multicast=True)
        self.assertEqual(wire.encodeStatus(built, EXAMPLE_KEY), [self.data])


# -- the size budget ---------------------------------------------------------------

#: The worked example's interfaces.
BUDGET_INTERFACES = ("lo", "eno1", "eno2", "ens1f0", "ens1f1", "ib0", "docker0", "virbr0")


def budgetNode(days: int, step: int = 0, hz: int = 100) -> Snapshot:
    """
    The size budget's node: 64 CPUs up C{days} days (plus C{step} seconds,
    72 % busy in each of those), 8 interfaces, 270 GB of memory.
    """
    up = days * 86400 * hz + step * hz
    cpus = []
    for i in range(64):
        user = up * 30 // 100 + i * 1009 + step * 30
        nice = up // 1000 + i
        system = up * 5 // 100 + i * 101 + step * 5
        iowait = up // 100 + i * 7 + step
        softirq = up // 200 + i * 3
        idle = up - user - nice - system - iowait - softirq
        cpus.append(CpuTicks(user, nice, system, idle, iowait, 0, softirq, 0))
    total = CpuTicks(*(sum(column) for column in zip(*(t.astuple() for t in cpus))))
    seconds = days * 86400 + step
    interfaces = tuple(
        Interface(name, 50_000 * seconds * (k + 1) + 125_000_000 * step,
                  60 * seconds * (k + 1) + 90_000 * step, k, 3 * k,
                  40_000 * seconds * (k + 1) + 125_000_000 * step,
                  50 * seconds * (k + 1) + 90_000 * step, 0, k)
        for k, name in enumerate(BUDGET_INTERFACES))
    return Snapshot(
        cpuInfo=CpuInfo(64, 2450.0, "AMD EPYC 7763 64-Core Processor"),
        cpuTotal=total, cpus=tuple(cpus),
        memory=Memory(270_000_000_000, 150_000_000_000, 230_000_000_000, 2_000_000_000,
                      60_000_000_000, 8_589_930_496, 8_589_930_496),
        load=Load(12.5, 11.75, 10.25, 13, 2345, 4_123_456),
        interfaces=interfaces,
        rootfs=FileSystem(4096, 244_190_646, 200_000_000, 187_500_000, 61_054_976,
                          60_000_000))


def budgetMessages(days: int) -> tuple[wire.Message, wire.Message]:
    """
    The budget node's first status (whole counters) and its second, one
    second later (increments), at C{-r 1}.
    """
    builder = StatusBuilder(17, bytes(range(16)), "node017.cluster.example.org", 1.0)
    full = builder.build(budgetNode(days), 1_700_000_000.0)
    increments = builder.build(budgetNode(days, 1), 1_700_000_001.0)
    return full, increments


class SizeBudgetTests(SynchronousTestCase):
    """
    The wire document's size budget is what the code measures.
    """

    KEY = b"k" * 32

    def setUp(self) -> None:
        self.text = _read(WIRE_DOC)
        self.flat = _flat(self.text)

    def assertMentions(self, phrase: str) -> None:
        """
        Fail unless the document says C{phrase} (line breaks aside).
        """
        if phrase not in self.flat:
            self.fail(f"docs/beostat-wire.md does not say {phrase!r}")

    def test_incrementsTable(self):
        """
        The table of an increments message's parts gives each section's
        real size and the real total, signed and unsigned, and it is one
        datagram; each row's sum adds up to its bytes, with the section
        header, the fixed sections' struct sizes, the cpus head and rows,
        and the net head and interface rows as the codec has them.
        """
        full, increments = budgetMessages(90)
        self.assertNotEqual(increments.cpus.base, 0)
        [signed] = wire.encodeStatus(increments, self.KEY)
        [unsigned] = wire.encodeStatus(increments)
        names = {v: k for k, v in vars(wire).items() if k.startswith("SEC_")}
        sizes = {names[code][4:].lower(): len(body) + 4
                 for code, body in _sections(signed).items()}
        sizes["header"] = wire.HEADER_SIZE
        sizes["hmac-sha-256"] = wire.SIGNATURE_SIZE
        rows = _table(self.text, "## Size budget")
        stated = {}
        sums = {}
        for row in rows:
            label = row["part of the datagram"].strip("*")
            name, _, formula = label.partition(" (")
            stated[name.lower()] = row["bytes"]
            if formula:
                sums[name.lower()] = formula.rstrip(")")
        total = stated.pop("total")
        self.assertEqual({k: int(v) for k, v in stated.items()}, sizes)
        self.assertEqual(total, f"**{len(signed)}** ({len(unsigned)} unsigned)")
        self.assertMentions(f"{wire.MAX_DATAGRAM - len(signed)} bytes to spare")
        # Each formula adds up to its row's bytes...
        for name, formula in sums.items():
            value = sum(math.prod(int(factor) for factor in term.split(" × "))
                        for term in formula.split(" + "))
            self.assertEqual(value, sizes[name], name)
        # ...and its terms are the codec's.
        header = wire._SECTION.size
        for name in ("cputotal", "memory", "load", "rootfs"):
            layout = WireSectionTests.FIXED[name]
            self.assertEqual(sums[name], f"{header} + {layout.size}")
        rowSize = len(wire._cpuBytes(increments.cpus.ticks[0]))
        self.assertEqual(
            {len(row) for row in wire._cpuRows(increments.cpus)}, {rowSize})
        self.assertEqual(sums["cpus"], f"{header} + {wire._CPUS.size} + 64 × {rowSize}")
        interfaces = increments.net.interfaces
        nameBytes = sum(len(i.name) for i in interfaces)
        self.assertEqual(
            sums["net"], f"{header} + {wire._NET.size} + {len(interfaces)} × "
            f"{1 + wire._COUNTERS.size} + {nameBytes}")
        self.assertMentions(f"{len(interfaces)} interface rows of {1 + wire._COUNTERS.size} "
                            f"bytes plus their names, {nameBytes} bytes in all")
        rowSizes = [len(wire._interfaceBytes(i)) for i in interfaces]
        self.assertMentions(f"(1 + name + 8 × 8 = {min(rowSizes)}–{max(rowSizes)} bytes per "
                            "row, whatever the counters)")
        self.assertEqual(8 * 8, wire._COUNTERS.size)
        self.assertMentions("one second's increments such as `{} {} {} {} {} {} {} {}` "
                            "({} bytes per CPU)".format(*increments.cpus.ticks[0], rowSize))

    def test_otherUptimes(self):
        """
        What the document says of other uptimes is measured: the
        increments message's signed size (the same at every uptime, if it
        says so), and the full message's two parts.
        """
        _, reference = budgetMessages(90)
        [reference] = wire.encodeStatus(reference, self.KEY)
        sizes = []
        for days in (1, 30, 365):
            full, increments = budgetMessages(days)
            sizes.append([len(d) for d in wire.encodeStatus(increments, self.KEY)])
            self.assertEqual(len(wire.encodeStatus(full, self.KEY)), 2, days)
        self.assertMentions("Up 1, 30 or 365 days it takes two datagrams as well.")
        self.assertEqual(sizes, [[len(reference)]] * 3)
        self.assertMentions(f"Up 1, 30 or 365 days instead of 90, it is the same "
                            f"{len(reference)} bytes signed")

    def test_mostCpus(self):
        """
        The largest CPU count whose increments message still fits one
        signed datagram with the budget's interfaces is the one quoted, and
        so is the largest whose full message does.
        """
        full, increments = budgetMessages(90)

        def most(message: wire.Message, row: CpuTicks) -> int:
            count = 0
            while True:
                block = wire.CpuBlock.fromTicks(count + 1, 0, message.cpus.base,
                                                (row,) * (count + 1))
                if len(wire.encodeStatus(attrs.evolve(message, cpus=block), self.KEY)) > 1:
                    return count
                count += 1

        self.assertMentions(f"up to {most(increments, increments.cpus.ticks[0])} CPUs fit")
        self.assertMentions("a full message fits one signed datagram only up to "
                            f"{most(full, full.cpus.ticks[0])} CPUs")

    def test_fullMessage(self):
        """
        The full message's per-CPU row size, and its split into two parts
        (sizes and CPU ranges, signed and unsigned), are the measured ones.
        """
        full, _ = budgetMessages(90)
        self.assertEqual(full.cpus.base, 0)
        rowSize = len(wire._cpuBytes(full.cpus.ticks[0]))
        self.assertMentions(f"(4 + 3 + 4 + 5 + 4 + 1 + 4 + 1 = {rowSize} bytes per CPU)")
        self.assertMentions(f"64 × {rowSize} = {64 * rowSize} bytes of CPU rows")
        self.assertMentions(
            "user {}, nice {}, system {}, idle {}, iowait {}, irq {}, softirq {}, steal {}"
            .format(*full.cpus.ticks[0].astuple()))
        signed = [wire.decode(d, self.KEY) for d in wire.encodeStatus(full, self.KEY)]
        signedSizes = [len(d) for d in wire.encodeStatus(full, self.KEY)]
        unsigned = [wire.decode(d) for d in wire.encodeStatus(full)]
        unsignedSizes = [len(d) for d in wire.encodeStatus(full)]
        self.assertEqual((len(signed), len(unsigned)), (2, 2))
        split = len(signed[0].cpus.ticks)
        first, second = signedSizes
        self.assertMentions(f"signed {first} bytes (small sections + CPUs 0–{split - 1}) "
                            f"and {second} bytes (CPUs {split}–63 + net)")
        split = len(unsigned[0].cpus.ticks)
        self.assertMentions(f"unsigned {unsignedSizes[0]} (CPUs 0–{split - 1}) and "
                            f"{unsignedSizes[1]}")
        sizes = {code: len(body) + 4 for code, body in _sections(
            wire.encodeStatus(full, self.KEY)[0]).items()}
        self.assertMentions(
            f"host ({sizes[wire.SEC_HOST]}) and cpuinfo ({sizes[wire.SEC_CPUINFO]})")


# -- the shared-memory document ------------------------------------------------------

def _sampleRecord() -> shm.NodeRecord:
    """
    A record whose every field has a value of its own.
    """
    return shm.NodeRecord(
        node=5, state=shm.DOWN, source=shm.SENDSTATS, interval=2.5, updated=1_712_345_678.25,
        firstSeen=1_712_000_000.5, senderTime=1_712_345_677.75, address="10.1.2.3",
        bootId=bytes(range(1, 17)), hostname="n5.example", model="Some CPU", sequence=1234,
        packets=5678, lost=9, cpuCount=3, mhz=1800.5, cpuUsage=0.375,
        ticks=CpuTicks(*range(101, 109)), memory=Memory(*range(201, 208)),
        load=Load(0.5, 0.25, 0.125, 4, 321, 7654), rates=(1.5, 2.5, 3.5, 4.5),
        rootfs=FileSystem(*range(301, 307)),
        cpuUsages=[0.25, None], cpuTicks=[*range(401, 409), *range(501, 509)],
        interfaceCount=4,
        interfaces=[Interface("eth0", *range(601, 609)), Interface("ib0", *range(701, 709))],
        origin=recv.ORIGIN_IPBASE,
    )


class ShmDocTests(SynchronousTestCase):
    """
    The shared-memory document's tables are the file's layout.
    """

    def setUp(self) -> None:
        self.text = _read(SHM_DOC)
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "beostat")
        self.writer = shm.ShmWriter(self.path, slots=8, maxCpus=4, maxInterfaces=3,
                                    clock=lambda: 1_700_000_000.5)
        self.writer.open()
        self.addCleanup(self.writer.close)
        self.record = _sampleRecord()
        self.writer.write(self.record)
        self.writer.setLastRequest(1_700_000_100.25)
        with open(self.path, "rb") as f:
            self.data = f.read()

    def test_headerOffsets(self):
        """
        The header table is C{shm.HEADER}, offset after offset, then
        reserved bytes up to C{HEADER_SIZE}; the offsets the code names are
        the table's for those fields.
        """
        rows = _table(self.text, "## Header")
        *fields, reserved = rows
        self.assertEqual(_docItems(fields), _items(shm.HEADER.format))
        self.assertEqual(reserved["field"], "reserved")
        start = int(reserved["offset"])
        self.assertEqual((start, start + int(reserved["size"])),
                         (shm.HEADER.size, shm.HEADER_SIZE))
        offsets = {r["field"]: int(r["offset"]) for r in rows}
        self.assertEqual(
            (offsets["flags"], offsets["generation"], offsets["last_request"],
             offsets["heartbeat"]),
            (shm.H_FLAGS, shm.H_GENERATION, shm.H_LAST_REQUEST, shm.H_HEARTBEAT))

    def test_headerFields(self):
        """
        The header's field names are C{ShmFile.header}'s, and a written file
        holds at each documented offset what the document says: magic,
        version, header size, first node, the geometry.
        """
        rows = _table(self.text, "## Header")[:-1]
        reading = shm.ShmFile(self.path)
        self.addCleanup(reading.close)
        header = reading.header()
        self.assertEqual([_camel(r["field"]) for r in rows], list(header))
        for row in rows:
            value = _unpack(row["type"], self.data, int(row["offset"]))
            self.assertEqual(value, header[_camel(row["field"])], row["field"])
        meanings = {r["field"]: r["meaning"] for r in rows}
        self.assertTrue(meanings["magic"].startswith('`"BEOSTAT\\0"`'))
        self.assertEqual(shm.MAGIC, b"BEOSTAT\0")
        self.assertTrue(meanings["version"] == str(shm.VERSION))
        self.assertTrue(meanings["header_size"].startswith(f"{shm.HEADER_SIZE}:"))
        self.assertTrue(meanings["first_node"].startswith(f"−{-shm.FIRST_NODE}:"))
        self.assertEqual(header["lastRequest"], 1_700_000_100.25)
        self.assertEqual(header["recordSize"], self.writer.layout.recordSize)

    def test_fixedOffsets(self):
        """
        The record table is C{shm.FIXED}, offset after offset, then
        reserved bytes up to C{FIXED_SIZE}; the offsets C{shm} and
        C{reader} name are the table's for those fields.
        """
        rows = _table(self.text, "## Record, fixed part")
        *fields, reserved = rows
        self.assertEqual(_docItems(fields), _items(shm.FIXED.format))
        self.assertEqual(reserved["field"], "reserved")
        start = int(reserved["offset"])
        self.assertEqual((start, start + int(reserved["size"])),
                         (shm.FIXED.size, shm.FIXED_SIZE))
        offsets = {r["field"]: int(r["offset"]) for r in rows}
        named = {
            "state": shm.F_STATE, "updated": shm.F_UPDATED, "mhz": shm.F_MHZ,
            "cpu_usage": shm.F_USAGE, "ticks": shm.F_TICKS, "loads": shm.F_LOADS,
            "rates": shm.F_RATES, "valid": reader._F_VALID, "cpu_count": reader._F_CPUCOUNT,
            "cpus_stored": reader._F_CPUS_STORED, "memory": reader._F_MEMORY,
        }
        self.assertEqual({name: offsets[name] for name in named}, named)

    def test_fixedFields(self):
        """
        A record written by L{shm.ShmWriter} holds, at each field's
        documented offset and type, the value the document says that field
        is.
        """
        r = self.record
        pack = lambda fmt, *v: struct.unpack(fmt, struct.pack(fmt, *v))  # noqa: E731
        expected = {
            "seq": None, "state": r.state, "source": r.source, "cpus_stored": len(r.cpus),
            "node": r.node, "interval_ms": round(r.interval * 1000), "updated": r.updated,
            "first_seen": r.firstSeen, "sender_time": r.senderTime,
            "address": b"\0" * 10 + b"\xff\xff" + bytes([10, 1, 2, 3]), "boot_id": r.bootId,
            "hostname": r.hostname.encode().ljust(64, b"\0"),
            "model": r.model.encode().ljust(64, b"\0"), "sequence": r.sequence,
            "packets": r.packets, "lost": r.lost,
            "valid": shm.V_CPUINFO | shm.V_TICKS | shm.V_MEMORY | shm.V_LOAD | shm.V_NET
            | shm.V_ROOTFS | shm.V_USAGE | shm.V_RATES,
            "cpu_count": r.cpuCount, "mhz": pack("<f", r.mhz)[0], "cpu_usage": r.cpuUsage,
            "interfaces_stored": len(r.interfaces), "ticks": r.ticks.astuple(),
            "memory": tuple(r.memory), "loads": (r.load.one, r.load.five, r.load.fifteen),
            "load_counts": (r.load.running, r.load.total, r.load.lastPid), "rates": r.rates,
            "rootfs": tuple(r.rootfs), "interface_count": r.interfaceCount,
            "origin": r.origin, "reserved": bytes(shm.FIXED_SIZE - shm.FIXED.size),
        }
        rows = _table(self.text, "## Record, fixed part")
        self.assertEqual([row["field"] for row in rows], list(expected))
        base = self.writer.layout.recordOffset(r.node)
        for row in rows:
            value = _unpack(row["type"], self.data, base + int(row["offset"]))
            if row["field"] == "seq":
                self.assertEqual(value % 2, 0)
                continue
            self.assertEqual(value, expected[row["field"]], row["field"])

    def test_entries(self):
        """
        The per-CPU and interface entry tables are C{CPU_ENTRY} and
        C{INTERFACE_ENTRY}, and a written record's entries hold the values
        the document says at the documented places.
        """
        cpuRows = _table(self.text, "## Per-CPU entries")
        interfaceRows = _table(self.text, "## Interface entries")
        self.assertEqual(_docItems(cpuRows), _items(shm.CPU_ENTRY.format))
        self.assertEqual(_docItems(interfaceRows), _items(shm.INTERFACE_ENTRY.format))
        layout = self.writer.layout
        base = layout.recordOffset(self.record.node)
        flat = _flat(self.text)
        self.assertIn(f"at record offset `{shm.FIXED_SIZE} + i × {shm.CPU_ENTRY.size}`", flat)
        self.assertIn(f"at record offset `interface_offset + i × {shm.INTERFACE_ENTRY.size}`",
                      flat)
        for i, (usage, ticks) in enumerate(self.record.cpus):
            at = base + shm.FIXED_SIZE + i * shm.CPU_ENTRY.size
            values = {r["field"]: _unpack(r["type"], self.data, at + int(r["offset"]))
                      for r in cpuRows}
            self.assertEqual(values, {"usage": -1.0 if usage is None else usage,
                                      "ticks": ticks.astuple()})
        for i, interface in enumerate(self.record.interfaces):
            at = base + layout.interfaceOffset + i * shm.INTERFACE_ENTRY.size
            values = {r["field"]: _unpack(r["type"], self.data, at + int(r["offset"]))
                      for r in interfaceRows}
            self.assertEqual(values, {"name": interface.name.encode().ljust(16, b"\0"),
                                      "counters": interface.counters()})

    def test_geometry(self):
        """
        The geometry formulas and the table of examples give
        C{Layout}'s offsets and sizes, and slot C{n + 1} holds node C{n}.
        """
        for row in _table(self.text, "## Record geometry"):
            cpus, interfaces = int(row["max cpus"]), int(row["max interfaces"])
            layout = shm.Layout(16, cpus, interfaces)
            self.assertEqual(
                (int(row["cpu offset"]), int(row["interface offset"]), int(row["record size"]),
                 int(row["file size, 16 slots"])),
                (layout.cpuOffset, layout.interfaceOffset, layout.recordSize, layout.fileSize))
            offset = (512 + cpus * 36 + 7) & ~7
            self.assertEqual(offset, layout.interfaceOffset)
            self.assertEqual((offset + interfaces * 80 + 63) & ~63, layout.recordSize)
        for node in (-1, 0, 6):
            self.assertEqual(self.writer.layout.recordOffset(node),
                             256 + (node + 1) * self.writer.layout.recordSize)
        default = shm.Layout(shm.DEFAULT_SLOTS, shm.DEFAULT_MAX_CPUS,
                             shm.DEFAULT_MAX_INTERFACES)
        first = _table(self.text, "## Record geometry")[0]
        self.assertEqual((int(first["max cpus"]), int(first["max interfaces"])),
                         (default.maxCpus, default.maxInterfaces))
        self.assertIn(f"`-N {shm.DEFAULT_SLOTS}` slots", self.text)

    def test_enumerations(self):
        """
        The valid bits, states, sources and origins the document lists are
        the code's.
        """
        bits = {r["name"]: int(r["bit"], 16) for r in _table(self.text, "### Valid bits")}
        self.assertEqual(bits, {name: getattr(shm, f"V_{name}") for name in bits})
        self.assertEqual(sorted(bits.values()), [1 << i for i in range(8)])
        states = {int(r["value"]): r["name"] for r in _table(self.text, "### state")}
        self.assertEqual(states, shm.STATE_NAMES)
        sources = {int(r["value"]): r["name"] for r in _table(self.text, "### source")}
        self.assertEqual(sources, {0: "none", shm.SENDSTATS: "sendstats", shm.GMOND: "gmond"})
        origins = {int(r["value"]): r["name"] for r in _table(self.text, "### origin")}
        self.assertEqual(origins, {
            recv.ORIGIN_SENDER: "sender", recv.ORIGIN_DIRECTORY: "directory",
            recv.ORIGIN_IPBASE: "ip-base", recv.ORIGIN_ASSIGNED: "assigned"})
        self.assertIn("bit 0 (0x1) REPLACED", self.text)
        self.assertEqual(shm.REPLACED, 0x1)

    def test_pathAndMode(self):
        """
        The default paths and the file mode are the code's.
        """
        self.assertIn(shm.defaultPath(), ("/var/shm/beostat", "/dev/shm/beostat"))
        self.assertIn("default `/var/shm/beostat` if `/var/shm` is a directory, else "
                      "`/dev/shm/beostat`", _flat(self.text))
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)
        self.assertIn("Mode **0644**", self.text)
