"""
C{sysmon-statd}: look at statd's status database while the daemon runs.

  -l          print the database: path, state, host count, one line per host
              with M (monitored) and N (notification required)
  -L          -l, then every 2 s what changed
  -N HOST     clear HOST's notification flag (exit 0), or exit 1 if unknown
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time

from sysmon.statd.store import connect, readStatus
from sysmon.statd.tap import DEFAULT_STATE_FILE

__all__ = ["main"]


def _lines(path: str) -> list[str]:
    state, hosts = readStatus(path)
    out = [f"{path}: state {state}, {len(hosts)} hosts"]
    for name, monitored, notify in hosts:
        flags = ("M" if monitored else "-") + ("N" if notify else "-")
        out.append(f"  {flags} {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sysmon-statd", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-file", default=DEFAULT_STATE_FILE)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("-l", action="store_true", help="list the status database")
    group.add_argument("-L", action="store_true", help="list it, then follow changes")
    group.add_argument("-N", metavar="HOST", help="clear HOST's notification flag")
    args = p.parse_args(argv)
    path = args.state_file
    if not os.path.exists(path):
        print(f"sysmon-statd: {path}: no such status database", file=sys.stderr)
        return 2
    try:
        if args.N:
            db = connect(path)
            try:
                changed = db.execute("UPDATE host SET notify = 0 WHERE name = ?",
                                     (args.N,)).rowcount
            finally:
                db.close()
            if not changed:
                print(f"sysmon-statd: {args.N}: not in {path}", file=sys.stderr)
                return 1
            return 0
        lines = _lines(path)
        print("\n".join(lines), flush=True)
        while args.L:
            time.sleep(2)
            new = _lines(path)
            for line in sorted(set(new) - set(lines)):
                print(f"+ {line.strip()}", flush=True)
            for line in sorted(set(lines) - set(new)):
                print(f"- {line.strip()}", flush=True)
            lines = new
    except sqlite3.Error as e:
        print(f"sysmon-statd: {path}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
