"""
C{beostat}: the cluster as a table, read from recvstats' shared-memory file.

One row per node: number, state, seconds since its last report, CPUs,
CPU usage, load, memory used/total, network receive/transmit rate, root
file-system free space, name and address.  C{--watch} redraws it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence, TextIO

from sysmon.beostat import shm
from sysmon.beostat.shm import LayoutError, NodeRecord, ShmFile

__all__ = ["main", "render", "rows"]

COLUMNS = ("NODE", "STATE", "AGE", "CPUS", "CPU%", "LOAD", "MEM USED/TOTAL", "RX/s", "TX/s",
           "DISK FREE", "HOST", "ADDRESS")


def _bytes(value: float) -> str:
    for unit in ("B", "K", "M", "G", "T", "P"):
        if abs(value) < 1024 or unit == "P":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}P"


def _age(seconds: float) -> str:
    if seconds < 0:
        return "0s"
    if seconds < 100:
        return f"{seconds:.1f}s"
    if seconds < 6000:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _row(record: NodeRecord, now: float) -> dict:
    memory = record.memory
    fs = record.rootfs
    return {
        "node": record.node,
        "state": shm.STATE_NAMES.get(record.state, "?"),
        "source": shm.SOURCE_NAMES.get(record.source, "?"),
        "age": now - record.updated,
        "cpus": record.cpuCount,
        "cpu": record.cpuUsage,
        "load": record.load.one if record.load else None,
        "memUsed": memory.total - memory.free if memory else None,
        "memTotal": memory.total if memory else None,
        "rx": record.rates[0] if record.rates else None,
        "tx": record.rates[1] if record.rates else None,
        "diskFree": fs.available * fs.blockSize if fs else None,
        "host": record.hostname,
        "address": record.address,
    }


def rows(file: ShmFile, now: float | None = None) -> list[dict]:
    """
    One dict per node in the file (L{COLUMNS} as values in base units).
    """
    when = time.time() if now is None else now
    return [_row(r, when) for r in file.records()]


def render(table: Sequence[dict], header: dict) -> str:
    """
    The table as aligned text.
    """
    def text(row: dict) -> tuple[str, ...]:
        def maybe(value, show):
            return "-" if value is None else show(value)
        return (
            str(row["node"]), row["state"], _age(row["age"]), str(row["cpus"] or "-"),
            maybe(row["cpu"], lambda v: f"{100 * v:.1f}"),
            maybe(row["load"], lambda v: f"{v:.2f}"),
            "-" if row["memTotal"] is None else
            f"{_bytes(row['memUsed'])}/{_bytes(row['memTotal'])}",
            maybe(row["rx"], _bytes), maybe(row["tx"], _bytes),
            maybe(row["diskFree"], _bytes), row["host"] or "-", row["address"] or "-",
        )

    lines = [COLUMNS] + [text(r) for r in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = []
    for line in lines:
        out.append("  ".join(
            cell.ljust(w) if i >= len(COLUMNS) - 2 or i == 1 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
    up = sum(1 for r in table if r["state"] == "up")
    beat = time.time() - header["heartbeat"] if header["heartbeat"] else None
    out.append(f"{len(table)} nodes, {up} up; recvstats last active "
               f"{'never' if beat is None else _age(beat) + ' ago'}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """
    The C{beostat} command.
    """
    parser = argparse.ArgumentParser(
        prog="beostat", description="Show the cluster's nodes from recvstats' shared-memory "
        "file: state, CPU, load, memory, network and disk per node.")
    parser.add_argument("--shm", default=None, help="the shared-memory file [default: "
                        "/var/shm/beostat if /var/shm exists, else /dev/shm/beostat]")
    parser.add_argument("-w", "--watch", type=float, nargs="?", const=2.0, default=None,
                        metavar="SECONDS", help="redraw every SECONDS (default 2) until ^C")
    parser.add_argument("--json", action="store_true", help="one JSON object per node")
    parser.add_argument("-n", "--node", type=int, action="append",
                        help="only this node (repeatable)")
    args = parser.parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        parser.error("--watch needs a positive number of seconds")
    path = args.shm or shm.defaultPath()
    try:
        file = ShmFile(path)
    except FileNotFoundError:
        print(f"beostat: {path}: no such file (is recvstats running?)", file=sys.stderr)
        return 1
    except (OSError, LayoutError) as e:
        print(f"beostat: {path}: {e}", file=sys.stderr)
        return 1
    try:
        while True:
            table = [r for r in rows(file) if not args.node or r["node"] in args.node]
            if args.json:
                for row in table:
                    out.write(json.dumps(row, sort_keys=True) + "\n")
            else:
                if args.watch is not None and out.isatty():
                    out.write("\x1b[H\x1b[2J")
                out.write(render(table, file.header()) + "\n")
            out.flush()
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        file.close()


if __name__ == "__main__":
    sys.exit(main())
