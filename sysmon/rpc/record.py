"""
TCP record marking (RFC 5531 section 11): a record is one or more
fragments, each with a 4-byte header (bit 31: last fragment; low 31 bits:
length).  One RPC message per record.
"""

from __future__ import annotations

import struct

__all__ = ["RecordReassembler", "RecordTooLarge", "frame"]

LAST = 0x80000000
_U32 = struct.Struct(">I")


class RecordTooLarge(ValueError):
    """
    A record grew past the cap: the connection should be dropped.
    """


def frame(message: bytes) -> bytes:
    """
    One single-fragment record.
    """
    return _U32.pack(LAST | len(message)) + message


class RecordReassembler:
    """
    Turns a byte stream into records.

    @ivar maxRecord: the largest record accepted (all fragments together).
    """

    def __init__(self, maxRecord: int = 64 * 1024) -> None:
        self.maxRecord = maxRecord
        self._buffer = bytearray()
        self._record = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add stream bytes; return the records now complete.

        @raise RecordTooLarge: a record is over the cap.
        """
        self._buffer += data
        records = []
        while len(self._buffer) >= 4:
            (header,) = _U32.unpack_from(self._buffer)
            length = header & ~LAST
            if len(self._record) + length > self.maxRecord:
                raise RecordTooLarge(f"record of more than {self.maxRecord} bytes")
            if len(self._buffer) < 4 + length:
                break
            self._record += self._buffer[4 : 4 + length]
            del self._buffer[: 4 + length]
            if header & LAST:
                records.append(bytes(self._record))
                self._record = bytearray()
        return records
