"""
keepalive benchmark: respawn latency against runit's runsv and supervisord,
and keepalive's idle cost.

Respawn latency is the time from SIGKILL of the supervised child to the new
child's first instruction.  The child is a tiny static C program (compiled at
run time with C{gcc -O2 -static} into the temporary directory) that, at the
top of C{main}, reads CLOCK_MONOTONIC and appends C{"pid sec.nsec"} to the
stamp file named in its first argument with one write(2) (O_APPEND), then
pause()s.  The benchmark reads CLOCK_MONOTONIC right before
C{os.kill(pid, SIGKILL)}, then polls the stamp file until the new child's
line appears: the latency is the new child's stamp minus the kill time, so
the polling interval does not enter the figure.  The pid killed is always
the one on the stamp file's latest line (checked against /proc/<pid>/cmdline
first), and every child has lived 1.5 s before it is killed (runsv waits a
second before restarting a service that died within a second of its start).
A respawn not seen within C{--respawn-timeout} (5 s) is counted as a failure
and reported; one not seen at all within 30 s more stops that supervisor's
run.

Supervisors, all in the same run, each started fresh for each phase:

  - keepalive: C{twistd -n --pidfile= keepalive -i} with its own table,
    control socket, log and script directories; the child registered with
    C{python -m sysmon.keepalive.cli -r CFG} (spawndaemon; respawn-time 0, probation 1,
    a large error limit);
  - runsv (Debian package C{runit}, C{apt-get install -y
    --no-install-recommends runit}): one service directory whose C{run} is
    C{#!/bin/sh} + C{exec stamper stampfile}; skipped with a note when
    /usr/bin/runsv is missing;
  - supervisord (in its own venv, C{<cache-dir>/supervisor-venv}, created
    with C{python3 -m venv} and C{pip install supervisor} the first time):
    C{autorestart=true}, C{startsecs=0}, C{supervisord -n -c CONF}.

Phase 1 measures C{--kills} (200) respawns with the child alone; phase 2
the same with C{--others} (500) more supervised processes (stampers on
another stamp file, which never die): 500 more configs in one group file
for keepalive, 500 more runsv instances (one runsv per service: that is
how runit scales), 500 more C{[program:x]} sections for supervisord.
Finally keepalive, still supervising the 500 + 1 processes, is left idle
for C{--idle-seconds} (30): its CPU (utime + stime from /proc/<pid>/stat,
% of one core), its wakeups (voluntary + non-voluntary context switches of
all its threads, /proc/<pid>/task/*/status) and its RSS.

It prints min / median / p95 / max per supervisor and phase, then the
issue's targets with their ratios: keepalive median <= runsv median,
keepalive p95 <= 5 ms, keepalive median with the 500 others <= 1.2 x
without, idle CPU < 1 % of a core, no periodic wakeups.  The exit status is
0 whether or not the targets are met (it is a benchmark), 1 if a supervisor
failed to run.

Run from the repository root, as root (2 cores, about 45 minutes with the
defaults):

    .venv/bin/python bench/keepalive_respawn.py [--kills 200] [--others 500]
        [--idle-seconds 30] [--only keepalive,runsv,supervisord] [--keep]

Everything it starts is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import IO, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUPERVISORS = ("keepalive", "runsv", "supervisord")
LIFETIME_NS = 1_500_000_000
POLL = 0.001
START_TIMEOUT = 60.0
LATE_LIMIT = 30.0
SETTLE = 5.0
RUNSV = "/usr/bin/runsv"

# Targets (issue 7).
RUNSV_RATIO = 1.0
P95_MS = 5.0
OTHERS_RATIO = 1.2
IDLE_CPU_PERCENT = 1.0
WAKEUPS_PER_SECOND = 0.1  # "no periodic wakeups": fewer than one every 10 s

STAMPER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* usage: stamper STAMPFILE [ANYTHING...]
 * Appends "pid sec.nsec\n" (CLOCK_MONOTONIC, read first thing) to STAMPFILE
 * with one write(2), then waits for a signal.  Extra arguments are ignored:
 * they make the command lines of the "other" processes distinct. */
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (argc > 1) {
        char line[64];
        int n = snprintf(line, sizeof line, "%ld %lld.%09ld\n", (long)getpid(),
                         (long long)ts.tv_sec, (long)ts.tv_nsec);
        int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, line, n) != n) return 3;
            close(fd);
        }
    }
    for (;;)
        pause();
}
"""


class BenchError(Exception):
    """
    A supervisor could not be run or measured (the message says why).
    """


def _now() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def _say(text: str) -> None:
    print(text, flush=True)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


class StampFile:
    """
    The stamp file the children append to, read incrementally.

    @ivar path: the file.
    @ivar lines: C{(pid, stamp in ns)} for every line read so far.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[tuple[int, int]] = []
        self._partial = b""
        self._offset = 0
        with open(path, "ab"):
            pass
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def poll(self) -> int:
        """
        Read what was appended since the last call.

        @return: the number of lines now read.
        """
        while True:
            data = os.pread(self._fd, 65536, self._offset)
            if not data:
                break
            self._offset += len(data)
            data = self._partial + data
            *complete, self._partial = data.split(b"\n")
            for line in complete:
                pid, stamp = line.split()
                seconds, _, nanoseconds = stamp.partition(b".")
                self.lines.append((int(pid), int(seconds) * 1_000_000_000 + int(nanoseconds)))
        return len(self.lines)

    def waitFor(self, count: int, timeout: float, alive: Callable[[], None] | None = None,
                interval: float = POLL) -> bool:
        """
        Poll until at least C{count} lines are there.

        @param alive: called between polls; raises L{BenchError} when the
            supervisor is gone.
        @return: whether they came within C{timeout} seconds.
        """
        end = time.monotonic() + timeout
        while self.poll() < count:
            if time.monotonic() >= end:
                return False
            if alive is not None:
                alive()
            time.sleep(interval)
        return True

    def pids(self) -> set[int]:
        self.poll()
        return {pid for pid, _ in self.lines}

    def close(self) -> None:
        os.close(self._fd)


class Result:
    """
    The respawn latencies of one supervisor in one phase.

    @ivar samples: latencies in ms of the respawns seen in time.
    @ivar failures: one entry per respawn not seen within the timeout: its
        latency in ms when it came later, else C{None}.
    @ivar extra: stamps of the measured child beyond one per kill (a child
        started twice, or restarted without being killed).
    @ivar othersRestarted: starts of the other processes beyond the first
        one each, during the measurement.
    @ivar error: why the run stopped early, or C{None}.
    """

    def __init__(self, name: str, others: int) -> None:
        self.name = name
        self.others = others
        self.samples: list[float] = []
        self.failures: list[float | None] = []
        self.extra = 0
        self.othersRestarted = 0
        self.error: str | None = None

    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def p95(self) -> float | None:
        return _percentile(self.samples, 95) if self.samples else None


class Supervised:
    """
    One supervisor under test, with the measured child and C{others} more
    processes.  Subclasses start and stop the real thing.

    @ivar stamps: the measured child's stamp file.
    @ivar otherStamps: the other processes' stamp file.
    @ivar procs: everything this run started directly (for the clean-up).
    """

    name = ""

    def __init__(self, bench: Bench, others: int) -> None:
        self.bench = bench
        self.others = others
        self.dir = os.path.join(bench.root, f"{self.name}-{others}")
        os.makedirs(self.dir)
        self.stamps = StampFile(os.path.join(self.dir, "child.stamps"))
        self.otherStamps = StampFile(os.path.join(self.dir, "others.stamps"))
        self.procs: list[subprocess.Popen] = []
        self.logPath = os.path.join(self.dir, f"{self.name}.log")
        self._log: IO[bytes] = open(self.logPath, "ab")
        self._stopped = False

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        """
        Start a process of this supervisor in its own session (so that a
        Ctrl-C at the terminal reaches only the benchmark, which then stops
        everything in order), output to the log.
        """
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=self.dir, **kw)
        self.procs.append(proc)
        self.bench.procs.append(proc)
        return proc

    def start(self) -> None:
        raise NotImplementedError

    def stopGracefully(self) -> None:
        raise NotImplementedError

    def alive(self) -> None:
        """
        @raise BenchError: the supervisor's main process has exited.
        """
        main = self.procs[0]
        if main.poll() is not None:
            raise BenchError(f"{self.name} exited with status {main.returncode}; "
                             f"its log ({self.logPath}) ends with:\n{_tail(self.logPath)}")

    def mainPid(self) -> int:
        return self.procs[0].pid

    def waitOthers(self) -> None:
        if not self.others:
            return
        _say(f"  {self.name}: waiting for the {self.others} other processes")
        if not self.otherStamps.waitFor(self.others, 5 * START_TIMEOUT, self.alive, 0.05):
            raise BenchError(f"{self.name}: only {self.otherStamps.poll()} of the "
                             f"{self.others} other processes started within "
                             f"{5 * START_TIMEOUT:.0f} s; log:\n{_tail(self.logPath)}")

    def stop(self) -> None:
        """
        Stop the supervisor its own way, then kill what is left: the
        process groups of what this run started (before they are reaped, so
        that the group ids are still theirs) and the children, by pid.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            self.stopGracefully()
        except Exception as e:  # noqa: BLE001 - the kill below still runs
            _say(f"  {self.name}: graceful stop failed: {e}")
        for proc in self.procs:
            _waitNoReap(proc.pid, 0.0)
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        _waitAll(self.procs, lambda proc: _say(
            f"  {self.name}: pid {proc.pid} survived SIGKILL for 10 s"))
        self.bench.killChildren(self.stamps.pids() | self.otherStamps.pids())
        self._log.close()
        self.stamps.close()
        self.otherStamps.close()


def _waitAll(procs: list[subprocess.Popen], late: Callable[[subprocess.Popen], None] | None = None) -> None:
    """
    Wait up to 10 s for each of C{procs}; C{late} is told of any still
    running.
    """
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            if late is not None:
                late(proc)


def _waitNoReap(pid: int, timeout: float) -> bool:
    """
    Wait for a child of ours to exit without reaping it (its pid, and so its
    process group id, stay ours until it is reaped).

    @return: whether it has exited.
    """
    end = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


class Keepalive(Supervised):
    """
    sysmon's keepalive, from this checkout, and its CLI.
    """

    name = "keepalive"

    def __init__(self, bench: Bench, others: int) -> None:
        super().__init__(bench, others)
        self.table = os.path.join(self.dir, "table", "keepalive.data")
        self.control = os.path.join(self.dir, "run", "keepalivecfg")
        self.logDir = os.path.join(self.dir, "log")
        self.scriptDir = os.path.join(self.dir, "scripts")
        os.makedirs(self.logDir)
        os.makedirs(self.scriptDir)
        self.env = dict(os.environ, PYTHONPATH=self.bench.repo)

    def _config(self, name: str, args: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(f"command = {self.bench.stamper}\nargs = {args}\nrespawn-time = 0\n"
                    f"error-limit = 100000\nprobation = 1\n")
        return path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.bench.python, "-m", "sysmon.keepalive.cli", "--control", self.control,
             "--table", self.table, "--script-dir", self.scriptDir, *args],
            env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=120)

    def register(self, path: str) -> None:
        end = time.monotonic() + START_TIMEOUT
        while True:
            done = self.cli("-r", path)
            if done.returncode == 0:
                return
            self.alive()
            if time.monotonic() >= end or "not running" not in done.stderr:
                raise BenchError(f"spawndaemon -r {path} exited with status "
                                 f"{done.returncode}: {done.stderr.strip()}")
            time.sleep(0.2)

    def start(self) -> None:
        # (twisted.scripts.twistd has no __main__ block: "-m" would do nothing.)
        self.spawn([self.bench.python, "-c", "from twisted.scripts.twistd import run; run()",
                    "-n", "--pidfile=",
                    "keepalive", "-i", "--table", self.table, "--control", self.control,
                    "--log-dir", self.logDir, "--script-dir", self.scriptDir], env=self.env)
        end = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.control):
            self.alive()
            if time.monotonic() >= end:
                raise BenchError(f"keepalive made no control socket within {START_TIMEOUT:.0f}"
                                 f" s; log:\n{_tail(self.logPath)}")
            time.sleep(0.05)
        if self.others:
            group = os.path.join(self.dir, "others.group")
            with open(group, "w") as f:
                f.write("group = others\n")
                for i in range(self.others):
                    member = self._config(f"other-{i}.cfg", f"{self.otherStamps.path} {i}")
                    f.write(f"member = {member}\n")
            _say(f"  keepalive: registering the {self.others} others (group file)")
            self.register(group)
            self.waitOthers()
        self.register(self._config("child.cfg", self.stamps.path))

    def stopGracefully(self) -> None:
        if self.procs and self.procs[0].poll() is None:
            done = self.cli("-Q")
            if done.returncode != 0:
                _say(f"  keepalive: spawndaemon -Q exited with status {done.returncode}: "
                     f"{done.stderr.strip()}; sending SIGTERM")
                self.procs[0].send_signal(signal.SIGTERM)
            if not _waitNoReap(self.procs[0].pid, 60):
                _say("  keepalive: still running 60 s after -Q / SIGTERM")


class Runsv(Supervised):
    """
    runit's runsv: one instance per service.
    """

    name = "runsv"

    def _service(self, name: str, args: str) -> str:
        path = os.path.join(self.dir, "service", name)
        os.makedirs(path)
        run = os.path.join(path, "run")
        with open(run, "w") as f:
            f.write(f"#!/bin/sh\nexec {self.bench.stamper} {args}\n")
        os.chmod(run, 0o755)
        return path

    def start(self) -> None:
        services = [self._service("child", self.stamps.path)]
        services += [self._service(f"other-{i}", f"{self.otherStamps.path} {i}")
                     for i in range(self.others)]
        # The measured child's runsv first (the liveness check watches it).
        self.spawn([RUNSV, services[0]])
        if self.others:
            _say(f"  runsv: starting {self.others} more runsv instances")
            for path in services[1:]:
                self.spawn([RUNSV, path])
            self.waitOthers()

    def stopGracefully(self) -> None:
        # TERM: runsv stops its service (TERM + CONT) and exits.
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 30
        for proc in self.procs:
            _waitNoReap(proc.pid, max(0.0, end - time.monotonic()))


class Supervisord(Supervised):
    """
    supervisord from its own venv.
    """

    name = "supervisord"

    def start(self) -> None:
        supervisord = self.bench.supervisord()
        conf = os.path.join(self.dir, "supervisord.conf")
        programs = [("child", f"{self.bench.stamper} {self.stamps.path}")]
        programs += [(f"other-{i}", f"{self.bench.stamper} {self.otherStamps.path} {i}")
                     for i in range(self.others)]
        with open(conf, "w") as f:
            f.write(
                f"[unix_http_server]\nfile = {self.dir}/supervisor.sock\n\n"
                f"[supervisord]\nnodaemon = true\nlogfile = {self.dir}/supervisord-main.log\n"
                f"pidfile = {self.dir}/supervisord.pid\nchildlogdir = {self.dir}\n"
                f"minfds = {max(1024, 8 * len(programs) + 256)}\nminprocs = 200\n"
                f"user = root\n\n"
                f"[rpcinterface:supervisor]\n"
                f"supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface"
                f"\n\n[supervisorctl]\nserverurl = unix://{self.dir}/supervisor.sock\n\n")
            for name, command in programs:
                f.write(f"[program:{name}]\ncommand = {command}\nautostart = true\n"
                        f"autorestart = true\nstartsecs = 0\nstartretries = 1000000\n"
                        f"stopwaitsecs = 5\nstdout_logfile = NONE\nredirect_stderr = true\n\n")
        self.spawn([supervisord, "-n", "-c", conf])
        self.waitOthers()

    def stopGracefully(self) -> None:
        if self.procs and self.procs[0].poll() is None:
            self.procs[0].send_signal(signal.SIGTERM)
            if not _waitNoReap(self.procs[0].pid, 60):
                _say("  supervisord: still running 60 s after SIGTERM")


class Bench:
    """
    The run: the temporary directory, the stamper, everything started.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.repo = os.path.abspath(args.repo)
        self.python = args.python
        self.root = tempfile.mkdtemp(prefix="ka-respawn-")
        self.procs: list[subprocess.Popen] = []
        self.stamper = os.path.join(self.root, "stamper")
        self._supervisord: str | None = None

    def compile(self) -> None:
        source = os.path.join(self.root, "stamper.c")
        with open(source, "w") as f:
            f.write(STAMPER_C)
        if shutil.which("gcc") is None:
            raise BenchError("gcc is needed to build the stamper (apt-get install gcc libc6-dev)")
        subprocess.run(["gcc", "-O2", "-static", "-o", self.stamper, source], check=True)

    def supervisord(self) -> str:
        """
        @return: the supervisord executable of the benchmark's venv, made
            the first time.
        """
        if self._supervisord is not None:
            return self._supervisord
        venv = os.path.join(os.path.abspath(self.args.cache_dir), "supervisor-venv")
        exe = os.path.join(venv, "bin", "supervisord")
        if not os.access(exe, os.X_OK):
            _say(f"  supervisord: creating {venv} (python3 -m venv; pip install supervisor)")
            python3 = shutil.which("python3") or sys.executable
            try:
                subprocess.run([python3, "-m", "venv", venv], check=True)
                subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q",
                                "supervisor"], check=True)
            except subprocess.CalledProcessError as e:
                raise BenchError(f"could not make the supervisord venv {venv}: {e}") from e
        version = subprocess.run([exe, "--version"], capture_output=True, text=True)
        _say(f"  supervisord {version.stdout.strip()} from {venv}")
        self._supervisord = exe
        return exe

    def killChildren(self, pids: set[int]) -> None:
        """
        SIGKILL the stampers among C{pids} that are still alive: only those
        whose command line is this run's stamper (a reused pid is left
        alone).
        """
        for pid in pids:
            argv = _cmdline(pid)
            if argv and argv[0] == self.stamper:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def sweep(self) -> None:
        """
        The last resort at exit: kill by pid any process still running this
        run's stamper, or with this run's (unique) directory on its command
        line, that a supervisor left behind.
        """
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            argv = _cmdline(int(entry))
            if argv and (argv[0] == self.stamper or any(self.root in a for a in argv)):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        _waitAll(self.procs)

    def cleanUp(self) -> None:
        if self.args.keep:
            _say(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def measure(sup: Supervised, kills: int, timeout: float) -> Result:
    """
    Kill the measured child C{kills} times and collect the respawn
    latencies.
    """
    result = Result(sup.name, sup.others)
    stamps = sup.stamps
    if not stamps.waitFor(1, START_TIMEOUT, sup.alive):
        raise BenchError(f"{sup.name}: the child did not start within {START_TIMEOUT:.0f} s; "
                         f"log:\n{_tail(sup.logPath)}")
    othersBefore = sup.otherStamps.poll()
    step = max(1, kills // 10)
    began = time.monotonic()
    for i in range(1, kills + 1):
        count = stamps.poll()
        pid, born = stamps.lines[-1]
        while (wait := born + LIFETIME_NS - _now()) > 0:
            time.sleep(min(wait / 1e9, 0.1))
            sup.alive()
        if stamps.poll() != count:
            # A start we did not cause (counted at the end): kill the newest child.
            count = stamps.poll()
            pid, born = stamps.lines[-1]
            while (wait := born + LIFETIME_NS - _now()) > 0:
                time.sleep(min(wait / 1e9, 0.1))
        argv = _cmdline(pid)
        if argv[:2] != [sup.bench.stamper, stamps.path]:
            raise BenchError(f"{sup.name}: pid {pid} from the latest stamp is not the "
                             f"measured child (command line {argv!r})")
        killed = _now()
        os.kill(pid, signal.SIGKILL)
        if stamps.waitFor(count + 1, timeout, sup.alive):
            result.samples.append((stamps.lines[count][1] - killed) / 1e6)
        elif stamps.waitFor(count + 1, LATE_LIMIT, sup.alive, 0.01):
            result.failures.append((stamps.lines[count][1] - killed) / 1e6)
            _say(f"  {sup.name}: kill {i}: no respawn within {timeout:g} s (came after "
                 f"{result.failures[-1]:.0f} ms)")
        else:
            result.failures.append(None)
            result.error = (f"kill {i}: no respawn within {timeout + LATE_LIMIT:g} s; "
                            f"stopped measuring")
            _say(f"  {sup.name}: {result.error}")
            break
        if stamps.lines[count][0] == pid:
            raise BenchError(f"{sup.name}: the new stamp has the killed pid {pid}")
        if i % step == 0 or i == kills:
            _say(f"  {sup.name} (+{sup.others}): {i}/{kills} kills, last "
                 f"{(stamps.lines[count][1] - killed) / 1e6:.2f} ms, median so far "
                 f"{statistics.median(result.samples) if result.samples else float('nan'):.2f}"
                 f" ms, failures {len(result.failures)}, {time.monotonic() - began:.0f} s")
    # A respawn may stamp twice (or restart the others): look once more.
    time.sleep(0.2)
    seen = len(result.samples) + sum(f is not None for f in result.failures)
    result.extra = max(0, stamps.poll() - 1 - seen)
    result.othersRestarted = sup.otherStamps.poll() - othersBefore
    return result


def _proc(pid: int) -> tuple[int, int, int]:
    """
    @return: (utime + stime in clock ticks, context switches of all
        threads, VmRSS in kB) of C{pid}.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    switches = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except OSError:
            pass
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return ticks, switches, rss


def idle(sup: Keepalive, seconds: float) -> dict[str, float]:
    """
    keepalive's CPU, wakeups and RSS over C{seconds} with nothing to do.
    """
    _say(f"  keepalive: settling {SETTLE:g} s, then idle for {seconds:g} s with "
         f"{sup.others + 1} processes")
    time.sleep(SETTLE)
    sup.alive()
    pid = sup.mainPid()
    threads = len(os.listdir(f"/proc/{pid}/task"))
    t0, s0, _ = _proc(pid)
    began = time.monotonic()
    time.sleep(seconds)
    t1, s1, rss = _proc(pid)
    elapsed = time.monotonic() - began
    sup.alive()
    return {"cpu": (t1 - t0) / os.sysconf("SC_CLK_TCK") / elapsed * 100,
            "wakeups": s1 - s0, "elapsed": elapsed, "rss": rss / 1024,
            "threads": threads, "processes": sup.others + 1}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(results: dict[tuple[str, int], Result], idleFigures: dict[str, float] | None,
           skipped: dict[str, str], kills: int) -> None:
    _say("")
    _say(f"respawn latency, SIGKILL -> new child's first instruction ({kills} kills each; ms)")
    for name in SUPERVISORS:
        if name in skipped:
            _say(f"\n{name}: skipped ({skipped[name]})")
            continue
        rows = [r for (n, _), r in sorted(results.items()) if n == name]
        if not rows:
            continue
        _say(f"\n{name}")
        _say(f"  {'others':>6} {'n':>5} {'fail':>5} {'min':>9} {'median':>9} {'p95':>9} "
             f"{'max':>9}  notes")
        for r in rows:
            notes = []
            if r.failures:
                late = [f"{f:.0f}" for f in r.failures if f is not None]
                notes.append(f"{len(r.failures)} over the timeout"
                             + (f" (late: {', '.join(late)} ms)" if late else ""))
            if r.extra:
                notes.append(f"{r.extra} unexpected extra starts")
            if r.othersRestarted:
                notes.append(f"{r.othersRestarted} restarts of the others")
            if r.error:
                notes.append(r.error)
            s = r.samples
            _say(f"  {r.others:>6} {len(s):>5} {len(r.failures):>5} "
                 f"{_ms(min(s) if s else None):>9} {_ms(r.median()):>9} {_ms(r.p95()):>9} "
                 f"{_ms(max(s) if s else None):>9}  {'; '.join(notes)}")

    def median(name: str, others: int) -> float | None:
        r = results.get((name, others))
        return r.median() if r else None

    _say("\ntargets (issue 7)")
    others = max((o for _, o in results), default=0)

    def target(label: str, value: float | None, limit: float, unit: str, met: bool | None,
               below: bool = False) -> None:
        if value is None:
            _say(f"  {label}: not measured")
            return
        relation = "<" if below else "<="
        _say(f"  {label}: {value:.3f}{unit} (target {relation} {limit:g}{unit}): "
             f"{'met' if met else 'NOT met'}")

    ka, rs = median("keepalive", 0), median("runsv", 0)
    ratio = ka / rs if ka is not None and rs is not None else None
    target("keepalive median / runsv median", ratio, RUNSV_RATIO, "",
           ratio is not None and ratio <= RUNSV_RATIO)
    p95 = results["keepalive", 0].p95() if ("keepalive", 0) in results else None
    target("keepalive p95", p95, P95_MS, " ms", p95 is not None and p95 <= P95_MS)
    if others:
        ko = median("keepalive", others)
        ratio = ko / ka if ko is not None and ka is not None else None
        target(f"keepalive median with {others} others / alone", ratio, OTHERS_RATIO, "",
               ratio is not None and ratio <= OTHERS_RATIO)
        p95o = results["keepalive", others].p95() if ("keepalive", others) in results else None
        ratio = p95o / p95 if p95o is not None and p95 else None
        target(f"keepalive p95 with {others} others / alone", ratio, OTHERS_RATIO, "",
               ratio is not None and ratio <= OTHERS_RATIO)
        target(f"keepalive p95 with {others} others", p95o, P95_MS, " ms",
               p95o is not None and p95o <= P95_MS)
        ro = median("runsv", others)
        if ko is not None and ro is not None:
            _say(f"  (keepalive median / runsv median, both with {others} others: "
                 f"{ko / ro:.3f})")
    if idleFigures is not None:
        cpu, rate = idleFigures["cpu"], idleFigures["wakeups"] / idleFigures["elapsed"]
        _say(f"  idle keepalive, {idleFigures['processes']:.0f} processes, "
             f"{idleFigures['elapsed']:.1f} s, {idleFigures['threads']:.0f} threads:")
        target("    CPU, % of a core", cpu, IDLE_CPU_PERCENT, " %", cpu < IDLE_CPU_PERCENT, True)
        target(f"    wakeups per second ({idleFigures['wakeups']:.0f} in all)", rate,
               WAKEUPS_PER_SECOND, "/s", rate < WAKEUPS_PER_SECOND, True)
        _say(f"    RSS: {idleFigures['rss']:.1f} MiB")
    else:
        _say("  idle keepalive: not measured")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200,
                        help="SIGKILLs per supervisor and phase (default 200)")
    parser.add_argument("--others", type=int, default=500,
                        help="other supervised processes in phase 2 (default 500; 0: no phase 2)")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="keepalive's idle window (default 30)")
    parser.add_argument("--only", default=",".join(SUPERVISORS),
                        help="comma-separated subset of: " + ", ".join(SUPERVISORS))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--respawn-timeout", type=float, default=5.0,
                        help="seconds after which a respawn counts as failed (default 5)")
    parser.add_argument("--python", default=sys.executable,
                        help="python for keepalive and its CLI (default: this one)")
    parser.add_argument("--repo", default=REPO, help="the sysmon checkout (PYTHONPATH)")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(),
                                                            "sysmon-bench-cache"),
                        help="where the supervisord venv is made and reused")
    args = parser.parse_args()
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(only) - set(SUPERVISORS))
    if unknown or not only:
        parser.error(f"--only: unknown supervisor(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(SUPERVISORS)}")
    skipped: dict[str, str] = {}
    if "runsv" in only and not os.access(RUNSV, os.X_OK):
        skipped["runsv"] = (f"{RUNSV} not found; install it with "
                            f"`apt-get install -y --no-install-recommends runit`")
        _say(f"runsv: skipped: {skipped['runsv']}")
    names = [n for n in SUPERVISORS if n in only and n not in skipped]
    kinds = {"keepalive": Keepalive, "runsv": Runsv, "supervisord": Supervisord}

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Also when started in the background of a script, which ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    bench = Bench(args)
    results: dict[tuple[str, int], Result] = {}
    idleFigures: dict[str, float] | None = None
    failed: list[str] = []
    live: list[Supervised] = []
    status = 0
    try:
        bench.compile()
        phases = [0] + ([args.others] if args.others > 0 else [])
        for others in phases:
            for name in names:
                if name in failed:
                    continue
                _say(f"{name}, {others} other processes: starting")
                sup = kinds[name](bench, others)
                live.append(sup)
                try:
                    sup.start()
                    results[name, others] = measure(sup, args.kills, args.respawn_timeout)
                    if results[name, others].error:
                        failed.append(name)
                    if name == "keepalive" and others == phases[-1]:
                        idleFigures = idle(sup, args.idle_seconds)
                except BenchError as e:
                    _say(f"{name}: FAILED: {e}")
                    failed.append(name)
                finally:
                    _say(f"  {name}: stopping")
                    sup.stop()
                    live.remove(sup)
        report(results, idleFigures, skipped, args.kills)
        if failed:
            _say(f"\nfailed to run: {', '.join(failed)}")
            status = 1
    except KeyboardInterrupt:
        _say("\ninterrupted: stopping everything")
        status = 130
    except (BenchError, subprocess.CalledProcessError) as e:
        _say(f"FAILED: {e}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for sup in live:
            sup.stop()
        bench.sweep()
        bench.cleanUp()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
