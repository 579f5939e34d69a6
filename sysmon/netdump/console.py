"""
Console text policy: turning the console datagrams of each client into the
bytes of its log, in order.

Three streams reach the netdump port:

 - netdump's own log stream (REPLY_LOG): each chunk carries its byte offset
   in the client's stream, which restarts at 0 when the client boots.
   Chunks are placed by offset; a chunk that arrives early waits (bounded)
   for the gap before it to fill, then the gap is marked in the text.
 - plain netconsole: raw text, in arrival order.
 - extended netconsole: one record per datagram, split with C{ncfrag} when
   longer than 1000 bytes; fragments are reassembled and each record is
   written as a dmesg-style line C{[seconds] text}, its key=value lines
   after it.

L{ConsoleStreams} keeps the per-client state, bounded in clients and in
bytes; it does no I/O: it returns the text and says when a client booted.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import attrs

from sysmon.netdump.wire import ExtendedRecord, WireError, decodeExtended

__all__ = ["ConsoleStreams", "Output", "formatRecord"]

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@attrs.frozen
class Output:
    """
    What one console datagram produced.

    @ivar text: bytes to append to the client's logs (may be empty).
    @ivar booted: the client's stream restarted: it booted.
    @ivar logStart: the restart was of the netdump log stream at offset 0
        (what runs the netdump-start script).
    """

    text: bytes = b""
    booted: bool = False
    logStart: bool = False


def formatRecord(record: ExtendedRecord, body: bytes) -> bytes:
    """
    A reassembled extended record as log text: C{[sssss.uuuuuu] message},
    C{\\xNN} escapes undone, then its C{ key=value} lines.
    """
    message, _, rest = body.partition(b"\n")
    message = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), message)
    seconds, micros = divmod(record.usec, 1_000_000)
    line = b"[%5d.%06d] %s\n" % (seconds, micros, message)
    extra = b"".join(b"%s\n" % l for l in rest.split(b"\n") if l.strip())
    return line + extra


class _LogStream:
    """
    One client's REPLY_LOG stream.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.expected: int | None = None
        self.pending: dict[int, bytes] = {}
        self.pendingBytes = 0
        self.pendingSince = 0.0
        self.first = b""
        self.firstAt = 0.0


class _Netconsole:
    """
    One client's netconsole state.
    """

    def __init__(self) -> None:
        self.plainPort: int | None = None
        self.extPort: int | None = None
        self.lastSeq: int | None = None
        # seq -> (record, total, {offset: bytes}, first seen)
        self.fragments: OrderedDict[int, tuple[ExtendedRecord, int, dict[int, bytes], float]] = (
            OrderedDict()
        )


class ConsoleStreams:
    """
    The console state of every client.

    @ivar holdSeconds: how long an early REPLY_LOG chunk waits for the text
        before it.
    @ivar holdBytes: how much early text one client may hold.
    @ivar maxClients: clients remembered (least recently heard forgotten).
    """

    holdSeconds = 2.0
    holdBytes = 256 * 1024
    maxClients = 4096
    maxFragmented = 16

    def __init__(self) -> None:
        self._logs: OrderedDict[str, _LogStream] = OrderedDict()
        self._net: OrderedDict[str, _Netconsole] = OrderedDict()
        self.lostBytes = 0

    def _get(self, table: OrderedDict, ip: str, factory):  # type: ignore[no-untyped-def]
        state = table.pop(ip, None)
        if state is None:
            state = factory()
            while len(table) >= self.maxClients:
                table.popitem(last=False)
        table[ip] = state
        return state

    # -- REPLY_LOG ---------------------------------------------------------

    def logChunk(self, ip: str, port: int, offset: int, data: bytes, now: float) -> Output:
        """
        A REPLY_LOG chunk from C{ip:port} at byte C{offset} of its stream.
        """
        stream = self._get(self._logs, ip, lambda: _LogStream(port))
        if offset == 0 and data:
            # A copy of the stream's first chunk soon after it is a
            # duplicate; otherwise the stream restarted: the client loaded
            # the module (booted) - no real machine reboots in seconds.
            if data == stream.first and port == stream.port and now - stream.firstAt < self.holdSeconds:
                return Output()
            lost = self._drop(stream)
            stream.port = port
            stream.expected = len(data)
            stream.first, stream.firstAt = data, now
            return Output(lost + data, booted=True, logStart=True)
        stream.port = port
        if stream.expected is None:
            # Joined mid-stream (we restarted, or the start was lost).
            stream.expected = offset + len(data)
            return Output(data)
        out = self._place(stream, offset, data, now)
        return Output(out + self._expire(stream, now))

    def _place(self, stream: _LogStream, offset: int, data: bytes, now: float) -> bytes:
        expected = stream.expected
        assert expected is not None
        if offset > expected:
            if offset not in stream.pending:
                if not stream.pending:
                    stream.pendingSince = now
                stream.pending[offset] = data
                stream.pendingBytes += len(data)
            if stream.pendingBytes > self.holdBytes:
                return self._release(stream)
            return b""
        end = offset + len(data)
        if end <= expected:
            return b""  # already have it
        out = data[expected - offset :]
        stream.expected = end
        return out + self._drain(stream)

    def _drain(self, stream: _LogStream) -> bytes:
        """
        Take held chunks that now follow on.
        """
        out = b""
        while stream.pending:
            expected = stream.expected
            assert expected is not None
            ready = [o for o in stream.pending if o <= expected]
            if not ready:
                break
            for o in sorted(ready):
                data = stream.pending.pop(o)
                stream.pendingBytes -= len(data)
                if o + len(data) > stream.expected:  # type: ignore[operator]
                    out += data[stream.expected - o :]  # type: ignore[operator]
                    stream.expected = o + len(data)
        return out

    def _release(self, stream: _LogStream) -> bytes:
        """
        Give up waiting: mark the gap and take what is held.
        """
        first = min(stream.pending)
        gap = first - stream.expected  # type: ignore[operator]
        self.lostBytes += gap
        stream.expected = first
        marker = b"\n[netdump: %d bytes of console text lost]\n" % gap
        return marker + self._drain(stream)

    def _expire(self, stream: _LogStream, now: float) -> bytes:
        out = b""
        while stream.pending and now - stream.pendingSince >= self.holdSeconds:
            out += self._release(stream)
            stream.pendingSince = now
        return out

    def _drop(self, stream: _LogStream) -> bytes:
        out = b""
        while stream.pending:
            out += self._release(stream)
        return out

    def tick(self, now: float) -> dict[str, bytes]:
        """
        Release text that has waited too long; call it now and then.

        @return: ip -> text to append.
        """
        released = {}
        for ip, stream in self._logs.items():
            if stream.pending:
                out = self._expire(stream, now)
                if out:
                    released[ip] = out
        return released

    # -- netconsole ----------------------------------------------------------

    def netconsole(self, ip: str, port: int, data: bytes, now: float) -> Output:
        """
        A netconsole datagram (plain or extended) from C{ip:port}.
        """
        state = self._get(self._net, ip, _Netconsole)
        try:
            record = decodeExtended(data)
        except WireError:
            booted = state.plainPort is not None and state.plainPort != port
            state.plainPort = port
            return Output(data, booted=booted)
        booted = (state.extPort is not None and state.extPort != port) or (
            state.lastSeq is not None and record.seq + 1000 < state.lastSeq
        )
        state.extPort = port
        state.lastSeq = record.seq
        if booted:
            state.fragments.clear()
        if record.fragment is None:
            return Output(formatRecord(record, record.body), booted=booted)
        offset, total = record.fragment
        entry = state.fragments.get(record.seq)
        if entry is None or entry[1] != total:
            while len(state.fragments) >= self.maxFragmented:
                state.fragments.popitem(last=False)
            entry = (record, total, {}, now)
            state.fragments[record.seq] = entry
        parts = entry[2]
        parts[offset] = record.body
        body = _joined(parts, total)
        if body is None:
            return Output(b"", booted=booted)
        del state.fragments[record.seq]
        return Output(formatRecord(entry[0], body), booted=booted)


def _joined(parts: dict[int, bytes], total: int) -> bytes | None:
    """
    The whole record if C{parts} (offset -> bytes) cover C{[0, total)}.
    """
    out = bytearray()
    for offset in sorted(parts):
        if offset > len(out):
            return None
        out[offset:] = parts[offset]
    if len(out) < total:
        return None
    return bytes(out[:total])
