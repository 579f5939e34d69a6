"""
Reading the real netconsole captures in shared/data/netconsole.
"""

from __future__ import annotations

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "netconsole"))


def capture(folder: str, name: str) -> list[bytes]:
    """
    The datagrams of C{<folder>/<name>.nccap} (C{NCCAP001}, then a u32
    big-endian length and the bytes of each datagram).
    """
    with open(os.path.join(DATA, folder, name + ".nccap"), "rb") as f:
        data = f.read()
    if data[:8] != b"NCCAP001":
        raise ValueError("not an NCCAP001 capture")
    out, at = [], 8
    while at < len(data):
        (length,) = struct.unpack_from(">I", data, at)
        out.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return out


def console(folder: str) -> bytes:
    with open(os.path.join(DATA, folder, "console.log"), "rb") as f:
        return f.read()


def available() -> bool:
    return os.path.isdir(DATA)
