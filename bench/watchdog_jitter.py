"""
watchdog benchmark: how late the device refresh comes while checks hang and
both cores are busy.

The real daemon (C{twistd -n watchdog}) runs for C{--seconds} (60) with
interval 1 against a fake device: a FIFO that this benchmark reads,
stamping each byte with CLOCK_MONOTONIC as it arrives (the reader runs
SCHED_FIFO when allowed, so that the stamps measure the daemon, not the
reader).  Meanwhile:

  - a test-binary hangs (it sleeps; test-timeout 20, so every 20 s it is
    killed with its process group and started again);
  - a C{file} check stats a path whose stat blocks (a FUSE mount from
    L{sysmon.hangfs} that never answers, as a dead hard-mounted NFS server;
    like NFS's, its wait can be killed, so the daemon can exit);
  - one busy loop per CPU keeps both cores at 100 %;
  - load, memory and pid-file checks run as usual;
  - the daemon's PATH starts with stand-ins for systemctl and shutdown, so
    a shutdown it might decide (the FIFO breaking if this benchmark is
    killed) reboots nothing.

The configuration has realtime = no: the target must hold without the
real-time scheduler.  The intervals between NUL bytes are printed with their
lateness (interval - 1 s, never negative): median, p99 and maximum, against
the issue's target of never more than 100 ms late.

Run from the repository root as root (FUSE mount):

    .venv/bin/python bench/watchdog_jitter.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sysmon.hangfs import HangingMount  # noqa: E402
from sysmon.testing import fakeInitSystem  # noqa: E402

TARGET = 0.100


def _normal() -> None:
    # Children must not inherit the reader's SCHED_FIFO.
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _burners() -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_normal)
            for _ in range(os.cpu_count() or 2)]


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--realtime", action="store_true",
                        help="run the daemon with realtime = yes (default: no)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="wd-jitter-")
    fifo = os.path.join(root, "watchdog")
    os.mkfifo(fifo)
    os.makedirs(os.path.join(root, "log"))
    os.makedirs(os.path.join(root, "watchdog.d"))
    hung = os.path.join(root, "hung-test")
    with open(hung, "w") as f:
        f.write("#!/bin/sh\nexec sleep 100000\n")
    os.chmod(hung, 0o755)
    pidfile = os.path.join(root, "me.pid")
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    mount = HangingMount(os.path.join(root, "nfs"), interruptible=True)
    mount.start()
    conf = os.path.join(root, "watchdog.conf")
    with open(conf, "w") as f:
        f.write(
            f"watchdog-device = {fifo}\ninterval = 1\nwatchdog-timeout = 60\n"
            f"log-dir = {root}/log\ntest-directory = {root}/watchdog.d\n"
            f"test-binary = {hung}\ntest-timeout = 20\n"
            f"file = {mount.hangingPath}\nfile = {conf}\n"
            f"pidfile = {pidfile}\nmax-load-1 = 1000\nmin-memory = 1\n"
            f"retry-timeout = 600\nadmin =\n"
            f"realtime = {'yes' if args.realtime else 'no'}\n")
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        readerPolicy = "SCHED_FIFO 50"
    except OSError:
        readerPolicy = "normal (SCHED_FIFO not permitted)"
    log = os.path.join(root, "twistd.log")
    daemon = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", f"--logfile={log}", "watchdog", "-c", conf],
        preexec_fn=_normal,
        env=dict(os.environ, PYTHONPATH=os.getcwd(),
                 PATH=fakeInitSystem(os.path.join(root, "bin"))[0] + ":" + os.environ["PATH"]))
    burners: list[subprocess.Popen] = []
    stamps: list[float] = []
    try:
        # Wait for the first byte, then load the machine.
        end = time.monotonic() + 30
        while not stamps and time.monotonic() < end:
            if select.select([reader], [], [], 0.5)[0]:
                data = os.read(reader, 64)
                now = time.monotonic()
                stamps += [now] * data.count(b"\0")
        if not stamps:
            raise SystemExit(f"no refresh within 30 s; log:\n{open(log).read()}")
        burners = _burners()
        end = stamps[0] + args.seconds
        while time.monotonic() < end:
            if select.select([reader], [], [], 0.5)[0]:
                data = os.read(reader, 64)
                now = time.monotonic()
                if not data:
                    break
                stamps += [now] * data.count(b"\0")
    finally:
        for b in burners:
            b.kill()
            b.wait()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            print("the daemon did not exit within 30 s of SIGTERM", file=sys.stderr)
        mount.stop()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)
        os.close(reader)
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    lateness = [max(0.0, i - 1.0) for i in intervals]
    text = open(log).read()
    print(f"daemon: twistd -n watchdog, interval 1 s, realtime = "
          f"{'yes' if args.realtime else 'no'}; reader: {readerPolicy}")
    print(f"load: {len(burners)} busy loops (one per CPU), a hung test-binary, "
          f"a file check whose stat blocks")
    print(f"file check timeouts logged: {text.count('did not return within')}, "
          f"test binary timeouts: {text.count('exceeded time limit')}")
    print(f"refreshes: {len(stamps)} over {stamps[-1] - stamps[0]:.1f} s "
          f"({len(intervals)} intervals)")
    print(f"interval: min {min(intervals) * 1000:.1f} ms, median "
          f"{statistics.median(intervals) * 1000:.1f} ms, max {max(intervals) * 1000:.1f} ms")
    worst = max(lateness)
    print(f"lateness: median {statistics.median(lateness) * 1000:.2f} ms, "
          f"p99 {_percentile(lateness, 99) * 1000:.2f} ms, max {worst * 1000:.2f} ms "
          f"(target <= {TARGET * 1000:.0f} ms: ratio {worst / TARGET:.3f}, "
          f"{'MET' if worst <= TARGET else 'MISSED'})")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
