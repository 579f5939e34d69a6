"""
netdump throughput benchmark.

Measures, in one run:

 (a) a raw loopback baseline of the netdump exchange between two minimal C
     processes: one 24-byte request answered by four 1037-byte datagrams,
     W requests in flight;
 (b) the real server (C{twistd -n netdump}) receiving from C{netdump-sim}:
     a 1 GiB dump with one client, with 1 % of fragments dropped, and with
     four clients at once; then the server's peak RSS for a 256 MiB and a
     2 GiB dump.

It prints pages/s, MB/s, the server's CPU seconds and peak RSS, the
simulator's CPU use (to show whether it is the bottleneck) and the ratios
to the baseline.  Run from the repository root:

    python bench/netdump_throughput.py [--size 1G] [--window 64]

Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sysmon.netdump.sim import parseSize  # noqa: E402
from sysmon.testing import processUsage  # noqa: E402

BASELINE_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* usage: baseline server PORT PAGES WINDOW | baseline client PORT
 *        baseline netdump PORT PAGES WINDOW  (a minimal netdump server: ACK, then SEND_MEM) */
static double now(void) { struct timeval tv; gettimeofday(&tv, 0); return tv.tv_sec + tv.tv_usec / 1e6; }

int main(int argc, char **argv) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 16 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in me = {0}, peer = {0};
    me.sin_family = AF_INET; me.sin_addr.s_addr = htonl(0x7f000001);
    unsigned char buf[2048];
    if (!strcmp(argv[1], "client")) {
        me.sin_port = 0;
        bind(fd, (void *)&me, sizeof me);
        peer = me; peer.sin_port = htons(atoi(argv[2]));
        sendto(fd, "hello", 5, 0, (void *)&peer, sizeof peer);
        unsigned char page[4096];
        for (int i = 0; i < 4096; i++) page[i] = i * 7;
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n != 24) continue;
            uint32_t nr, cmd; memcpy(&nr, buf + 8, 4); memcpy(&cmd, buf + 12, 4);
            if (ntohl(cmd) == 3) return 0;
            for (int off = 0; off < 4096; off += 1024) {
                unsigned char out[1037];
                out[0] = 5; memcpy(out + 1, &nr, 4);
                uint32_t code = htonl(3), info = htonl(off);
                memcpy(out + 5, &code, 4); memcpy(out + 9, &info, 4);
                memcpy(out + 13, page + off, 1024);
                sendto(fd, out, sizeof out, 0, (void *)&peer, sizeof peer);
            }
        }
    }
    long pages = atol(argv[3]); int window = atoi(argv[4]);
    int netdump = !strcmp(argv[1], "netdump");
    me.sin_port = htons(atoi(argv[2]));
    bind(fd, (void *)&me, sizeof me);
    socklen_t len = sizeof peer;
    for (;;) {
        len = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (void *)&peer, &len);
        if (!netdump || (n >= 13 && buf[8] == 8)) break;  /* netdump: wait for START */
    }
    if (netdump) {  /* START_NETDUMP_ACK, version 5 */
        unsigned char ack[24] = {0};
        uint32_t cmd = htonl(7), from = htonl(5);
        memcpy(ack + 12, &cmd, 4); memcpy(ack + 16, &from, 4);
        sendto(fd, ack, 24, 0, (void *)&peer, sizeof peer);
    }
    unsigned char *got = calloc(pages + window, 1);
    long sent = 0, done = 0;
    unsigned char req[24] = {0};
    double t0 = now();
    while (sent < window && sent < pages) {
        uint32_t nr = htonl(sent), cmd = htonl(1), from = htonl(sent);
        memcpy(req + 8, &nr, 4); memcpy(req + 12, &cmd, 4); memcpy(req + 16, &from, 4);
        sendto(fd, req, 24, 0, (void *)&peer, sizeof peer); sent++;
    }
    while (done < pages) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n != 1037) continue;
        uint32_t nr; memcpy(&nr, buf + 1, 4); nr = ntohl(nr);
        if (++got[nr] == 4) {
            done++;
            if (sent < pages) {
                uint32_t nr2 = htonl(sent), cmd = htonl(1), from = htonl(sent);
                memcpy(req + 8, &nr2, 4); memcpy(req + 12, &cmd, 4); memcpy(req + 16, &from, 4);
                sendto(fd, req, 24, 0, (void *)&peer, sizeof peer); sent++;
            }
        }
    }
    double t = now() - t0;
    uint32_t cmd = htonl(3); memcpy(req + 12, &cmd, 4);
    for (int i = 0; i < 3; i++) sendto(fd, req, 24, 0, (void *)&peer, sizeof peer);
    printf("%ld %f\n", pages, t);
    return 0;
}
"""


#: taskset prefixes: --pin puts the server on CPU 0 and the simulators on
#: the others, as if they were separate machines (set in main()).
PIN_SERVER: list[str] = []
PIN_CLIENTS: list[str] = []


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline(pages: int, window: int, work: str) -> dict:
    """
    (a): the C-to-C exchange.
    """
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed for the C baseline")
    src = os.path.join(work, "baseline.c")
    exe = os.path.join(work, "baseline")
    with open(src, "w") as f:
        f.write(BASELINE_C)
    subprocess.run(["gcc", "-O2", "-o", exe, src], check=True)
    baseline.exe = exe  # type: ignore[attr-defined]
    port = freePort()
    server = subprocess.Popen([exe, "server", str(port), str(pages), str(window)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    client = subprocess.Popen([exe, "client", str(port)])
    out, _ = server.communicate(timeout=600)
    client.wait(30)
    n, seconds = out.split()
    rate = int(n) / float(seconds)
    return {"pages_per_s": rate, "mb_per_s": rate * 4096 / 1e6, "seconds": float(seconds)}


def simCeiling(exe: str, pages: int, window: int) -> dict:
    """
    (d): netdump-sim against the minimal C server: how fast the simulator
    alone can go, to show it is not what limits (b).
    """
    port = freePort()
    server = subprocess.Popen([exe, "netdump", str(port), str(pages), str(window)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    sim = subprocess.Popen(
        [sys.executable, "-m", "sysmon.netdump.sim", "--port", str(port), "--memory",
         f"{pages * 4}K", "--holes", "", "--zero-fraction", "0", "--no-progress", "--stats",
         "--idle-timeout", "30"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out, _ = server.communicate(timeout=600)
    simOut, _ = sim.communicate(timeout=60)
    n, seconds = out.split()
    stats = json.loads(simOut.strip().splitlines()[-1])
    rate = int(n) / float(seconds)
    return {"pages_per_s": rate, "mb_per_s": rate * 4096 / 1e6,
            "sim_cpu_share": stats["cpu"] / float(seconds)}


def cpuBusy() -> tuple[float, float]:
    """
    (busy, total) jiffies of the whole machine, from /proc/stat.
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def procStat(pid: int) -> tuple[float, int]:
    """
    CPU seconds used and peak RSS (bytes) of C{pid}.
    """
    usage = processUsage(pid)
    return usage.cpu, usage.peakRss


class Server:
    def __init__(self, work: str, window: int):
        self.dumpdir = tempfile.mkdtemp(prefix="dumps-", dir=work)
        self.port = freePort()
        self.log = os.path.join(work, f"server-{self.port}.log")
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "--pidfile=", f"--logfile={self.log}", "netdump", "--port", str(self.port),
                "--addr", "127.0.0.1", "--dumpdir", self.dumpdir, "--secure", "0",
                "--space-check", "0", "--window", str(window), "--config", os.devnull]
        self.process = subprocess.Popen(PIN_SERVER + argv, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(self.log) and "netdump listening" in open(self.log).read():
                return
            time.sleep(0.05)
        raise SystemExit("the server did not start:\n" + open(self.log).read())

    def stop(self) -> tuple[float, int]:
        stat = procStat(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        shutil.rmtree(self.dumpdir, ignore_errors=True)
        return stat


def runSims(server: Server, size: str, clients: int, drop: float) -> dict:
    sims = []
    for i in range(clients):
        bind = "127.0.0.1" if clients == 1 else f"127.0.0.{11 + i}"
        sims.append(subprocess.Popen(
            PIN_CLIENTS + [sys.executable, "-m", "sysmon.netdump.sim", "--server", "127.0.0.1", "--port",
             str(server.port), "--bind", bind, "--memory", size, "--drop", str(drop),
             "--zero-fraction", "0", "--no-progress", "--stats", "--idle-timeout", "60"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    stats = []
    for sim in sims:
        out, err = sim.communicate(timeout=1800)
        if sim.returncode != 0:
            raise SystemExit(f"netdump-sim failed: {err}")
        stats.append(json.loads(out.strip().splitlines()[-1]))
    pages = sum(s["pages"] for s in stats)
    first = min(s["first_mem"] for s in stats)
    last = max(s["last_mem"] for s in stats)
    seconds = last - first
    return {"pages": pages, "seconds": seconds, "pages_per_s": pages / seconds,
            "mb_per_s": pages * 4096 / seconds / 1e6,
            "sim_cpu": sum(s["cpu"] for s in stats),
            "sim_cpu_share": max(s["cpu"] for s in stats) / seconds}


def real(work: str, size: str, clients: int, drop: float, window: int) -> dict:
    server = Server(work, window)
    cpu0, _ = procStat(server.process.pid)
    busy0, total0 = cpuBusy()
    result = runSims(server, size, clients, drop)
    busy1, total1 = cpuBusy()
    cpu1, hwm = server.stop()
    result.update(server_cpu=cpu1 - cpu0, server_cpu_share=(cpu1 - cpu0) / result["seconds"],
                  server_peak_rss=hwm, machine_busy=(busy1 - busy0) / (total1 - total0))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="dump size for the throughput runs [1G]")
    parser.add_argument("--window", type=int, default=64, help="requests in flight [64]")
    parser.add_argument("--rss-sizes", default="256M,2G", help="dump sizes for the RSS runs")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each (b) run [3]")
    parser.add_argument("--pin", action="store_true",
                        help="run the server on CPU 0 and the simulators on the other CPUs "
                             "(taskset), so that they do not take each other's CPU time")
    args = parser.parse_args()
    if args.pin:
        cpus = os.cpu_count() or 1
        if cpus < 2 or shutil.which("taskset") is None:
            raise SystemExit("--pin needs taskset and at least 2 CPUs")
        PIN_SERVER[:] = ["taskset", "-c", "0"]
        PIN_CLIENTS[:] = ["taskset", "-c", f"1-{cpus - 1}"]
    pages = parseSize(args.size) // 4096
    work = tempfile.mkdtemp(prefix="netdump-bench-")
    try:
        base = baseline(pages, args.window, work)
        print(f"(a) C baseline, W={args.window}: {base['pages_per_s']:,.0f} pages/s "
              f"{base['mb_per_s']:.1f} MB/s")
        configs = (("1 client", 1, 0.0), ("1 client, 1% drop", 1, 0.01), ("4 clients", 4, 0.0))
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
        # Interleaved repetitions, so that drift on a shared machine (page
        # cache writeback, neighbours) touches every configuration alike.
        for _ in range(args.repeat):
            for label, clients, drop in configs:
                runs[label].append(real(work, args.size, clients, drop, args.window))
        medians = {}
        for label, _, _ in configs:
            ordered = sorted(runs[label], key=lambda r: r["mb_per_s"])
            r = medians[label] = ordered[len(ordered) // 2]
            spread = f"{ordered[0]['mb_per_s']:.0f}-{ordered[-1]['mb_per_s']:.0f}"
            print(f"(b) {label:<18} {args.size}/client: {r['pages_per_s']:,.0f} pages/s "
                  f"{r['mb_per_s']:.1f} MB/s (median of {len(ordered)}, range {spread})"
                  f"  ratio to (a) {r['mb_per_s'] / base['mb_per_s']:.2f}"
                  f"  server CPU {r['server_cpu']:.1f}s ({r['server_cpu_share']:.0%} of a core)"
                  f"  sim CPU {r['sim_cpu_share']:.0%} of a core (busiest)"
                  f"  server peak RSS {r['server_peak_rss'] / 2**20:.1f} MiB"
                  f"  machine CPU busy {r['machine_busy']:.0%} of {os.cpu_count()} cores")
        one, lossy, four = (medians[label] for label, _, _ in configs)
        print(f"    1% drop / loss-free: {lossy['mb_per_s'] / one['mb_per_s']:.2f}   "
              f"4 clients / 1 client: {four['mb_per_s'] / one['mb_per_s']:.2f}")
        ceiling = simCeiling(baseline.exe, pages, args.window)  # type: ignore[attr-defined]
        print(f"(d) netdump-sim against a minimal C server: {ceiling['pages_per_s']:,.0f} pages/s "
              f"{ceiling['mb_per_s']:.1f} MB/s (sim CPU {ceiling['sim_cpu_share']:.0%} of a core); "
              f"(b) 1 client reached {one['mb_per_s'] / ceiling['mb_per_s']:.2f} of it")
        rss = []
        for size in args.rss_sizes.split(","):
            r = real(work, size, 1, 0.0, args.window)
            rss.append((size, r))
            print(f"(c) RSS {size:>5}: server peak RSS {r['server_peak_rss'] / 2**20:.1f} MiB "
                  f"({r['mb_per_s']:.1f} MB/s)")
        if len(rss) == 2:
            a, b = rss[0][1]["server_peak_rss"], rss[1][1]["server_peak_rss"]
            print(f"    peak RSS {rss[1][0]} / {rss[0][0]}: {b / a:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
