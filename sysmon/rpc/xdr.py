"""
XDR (RFC 4506): a packer and an unpacker bounded by the bytes given.

Every decoding error raises L{XDRError}: truncated data, a length over its
bound, or (from L{Unpacker.done}) bytes left over.
"""

from __future__ import annotations

import struct
from typing import Callable, TypeVar

__all__ = ["Packer", "Unpacker", "XDRError"]

T = TypeVar("T")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")


class XDRError(ValueError):
    """
    Bytes that do not decode as the XDR type asked for.
    """


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


class Packer:
    """
    Builds XDR bytes.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def uint(self, value: int) -> Packer:
        self._parts.append(_U32.pack(value & 0xFFFFFFFF))
        return self

    def int(self, value: int) -> Packer:
        self._parts.append(_I32.pack(value))
        return self

    def bool(self, value: bool) -> Packer:
        return self.uint(1 if value else 0)

    def hyper(self, value: int) -> Packer:
        self._parts.append(_U64.pack(value))
        return self

    def fopaque(self, size: int, data: bytes) -> Packer:
        """
        Fixed-length opaque: exactly C{size} bytes, padded, no length.
        """
        if len(data) != size:
            raise ValueError(f"fixed opaque of {size} bytes given {len(data)}")
        self._parts.append(bytes(data) + b"\0" * _pad(size))
        return self

    def opaque(self, data: bytes) -> Packer:
        """
        Variable-length opaque (or string): length, bytes, padding.
        """
        self.uint(len(data))
        self._parts.append(bytes(data) + b"\0" * _pad(len(data)))
        return self

    string = opaque

    def array(self, items: list[T], pack: Callable[[T], object]) -> Packer:
        self.uint(len(items))
        for item in items:
            pack(item)
        return self

    def raw(self, data: bytes) -> Packer:
        """
        Bytes already in XDR form.
        """
        self._parts.append(bytes(data))
        return self

    def bytes(self) -> bytes:
        return b"".join(self._parts)


class Unpacker:
    """
    Reads XDR from C{data} (bytes or a memoryview), never past its end.
    """

    def __init__(self, data: bytes | memoryview, position: int = 0) -> None:
        self.data = memoryview(data) if not isinstance(data, memoryview) else data
        self.position = position

    @property
    def remaining(self) -> int:
        return len(self.data) - self.position

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.position + n > len(self.data):
            raise XDRError(f"truncated: {n} bytes wanted at offset {self.position}, "
                           f"{len(self.data) - self.position} left")
        view = self.data[self.position : self.position + n]
        self.position += n
        return view

    def uint(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def int(self) -> int:
        return _I32.unpack(self._take(4))[0]

    def bool(self) -> bool:
        value = self.uint()
        if value > 1:
            raise XDRError(f"bool of value {value}")
        return value == 1

    def hyper(self) -> int:
        return _U64.unpack(self._take(8))[0]

    def fopaque(self, size: int) -> bytes:
        data = bytes(self._take(size))
        self._take(_pad(size))
        return data

    def opaque(self, maximum: int) -> bytes:
        """
        Variable-length opaque of at most C{maximum} bytes.
        """
        length = self.uint()
        if length > maximum:
            raise XDRError(f"opaque of {length} bytes, at most {maximum} allowed")
        return self.fopaque(length)

    string = opaque

    def array(self, unpack: Callable[[], T], maximum: int) -> list[T]:
        count = self.uint()
        if count > maximum:
            raise XDRError(f"array of {count} items, at most {maximum} allowed")
        return [unpack() for _ in range(count)]

    def rest(self) -> memoryview:
        """
        Everything not read yet.
        """
        return self._take(self.remaining)

    def done(self) -> None:
        """
        @raise XDRError: bytes are left over.
        """
        if self.remaining:
            raise XDRError(f"{self.remaining} bytes left over")
