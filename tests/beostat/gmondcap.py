"""
Reading the real gmond 3.7.2 captures in shared/data/gmond: the raw
datagrams (C{*.cap}), their index (C{*.index.json}), the independent
decoder's output (C{*.decoded.json}) and gmond's own XML dump
(C{gmond_b.xml}).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "gmond"))

#: The captures: two runs of gmond, one of gmetric calls.
NAMES = ("gmond_a", "gmond_b", "gmetric")

MAGIC = b"GMCAP001"


def available() -> bool:
    """
    Whether the captures are beside the checkout.
    """
    return os.path.isfile(os.path.join(DATA, "gmond_a.cap"))


def parse(data: bytes) -> list[bytes]:
    """
    The datagrams of a C{GMCAP001} file: the magic, then per datagram a u32
    big-endian length and the bytes.

    @raise ValueError: not such a file, or cut short.
    """
    if data[:8] != MAGIC:
        raise ValueError("not a GMCAP001 capture")
    out, at = [], 8
    while at < len(data):
        if at + 4 > len(data):
            raise ValueError(f"capture cut short at offset {at}")
        (length,) = struct.unpack_from(">I", data, at)
        if at + 4 + length > len(data):
            raise ValueError(f"datagram at offset {at} cut short")
        out.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return out


def capture(name: str) -> list[bytes]:
    """
    The datagrams of C{<name>.cap}, in capture order.
    """
    with open(os.path.join(DATA, name + ".cap"), "rb") as f:
        return parse(f.read())


def _json(filename: str) -> Any:
    with open(os.path.join(DATA, filename), encoding="utf-8") as f:
        return json.load(f)


def decoded(name: str) -> list[dict[str, Any]]:
    """
    C{<name>.decoded.json}: one record per datagram, decoded field by field.
    """
    return _json(name + ".decoded.json")  # type: ignore[no-any-return]


def index(name: str) -> dict[str, Any]:
    """
    C{<name>.index.json}: the capture's set-up and one record per datagram
    (C{seq, offset, len, t_rel, t_real, src, relayed}).
    """
    return _json(name + ".index.json")  # type: ignore[no-any-return]


def xmlPath() -> str:
    """
    Where gmond's XML dump at the end of run B is.
    """
    return os.path.join(DATA, "gmond_b.xml")
