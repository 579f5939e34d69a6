"""
Writes the synthetic fixture C{/proc} trees next to this script, in the
kernel's own formats (the C{seq_printf} formats are quoted where they
matter), with deterministic values:

  - C{cpus256/}: a two-socket AMD EPYC 7763 with 256 CPUs.
  - C{ifaces32/}: 32 interfaces, long names (up to the 15-byte limit),
    printed with 2.6 kernels' C{"%6s:%8llu ..."} so big counters are glued
    to the name (C{"enp129s0f1np1:123456789012"}).
  - C{missing/}: only C{loadavg} and C{meminfo}.
  - C{old-kernel/}: a 2.4 kernel's C{stat} (4 counters per CPU) and
    C{meminfo} (leading table, no C{MemAvailable}), and a 2.6.35 ARMv7
    C{cpuinfo} (no C{cpu MHz}).
  - C{extra-fields/}: what a future kernel might add: 11 counters per
    C{cpu} line and a C{cpu_...} line, unknown C{meminfo} keys, a 17th
    C{net/dev} column, unknown C{cpuinfo} keys.
  - C{aarch64/}: a Raspberry Pi 4 (4 Cortex-A72, arm64 kernel).

The output is checked in; C{tests/beostat/test_procfs.py} checks that it is
what this script writes.  Run C{python tests/beostat/proc/make_fixtures.py}
after changing it.
"""

from __future__ import annotations

import os
import shutil
import sys

#: The trees this script owns (it replaces them whole).
TREES = ("cpus256", "ifaces32", "missing", "old-kernel", "extra-fields", "aarch64")

NET_HEADER = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast"
    "|bytes    packets errs drop fifo colls carrier compressed\n"
)

#: 2.6.x: C{"%6s:%8llu %7llu %4llu %4llu %4llu %5llu %10llu %9llu %8llu
#: %7llu %4llu %4llu %4llu %5llu %7llu %10llu\n"}; since 3.x a space
#: follows the colon.
NET_WIDTHS = (8, 7, 4, 4, 4, 5, 10, 9, 8, 7, 4, 4, 4, 5, 7, 10)


def netRow(name: str, counters: list[int], glued: bool = True) -> str:
    """
    One C{/proc/net/dev} row: 16 counters (or more, for a future kernel).
    """
    widths = NET_WIDTHS + (7,) * (len(counters) - len(NET_WIDTHS))
    numbers = " ".join(f"{value:>{width}}" for value, width in zip(counters, widths))
    return f"{name:>6}:{'' if glued else ' '}{numbers}\n"


def netCounters(seed: int) -> list[int]:
    """
    Plausible counters for an interface, from C{seed}.
    """
    rxPackets = 1000003 * seed * seed + 17 * seed
    txPackets = 700001 * seed * seed + 5 * seed
    return [
        rxPackets * 1200 + seed, rxPackets, seed % 3, seed % 5, 0, seed % 2, 0, seed * 11,
        txPackets * 900 + seed, txPackets, seed % 2, seed % 7, 0, 0, 0, 0,
    ]


def statText(cpus: list[list[int]], extra: str = "") -> str:
    """
    A 2.6.33+ C{/proc/stat}: C{"cpu  "} with the sums, C{"cpuN "} lines.
    """
    total = [sum(column) for column in zip(*cpus)]
    lines = ["cpu  " + " ".join(map(str, total))]
    lines += [f"cpu{i} " + " ".join(map(str, c)) for i, c in enumerate(cpus)]
    lines.append(extra + "intr 98765432 " + " ".join(str(i * 7 % 13) for i in range(300)))
    lines += ["ctxt 123456789", "btime 1712345678", "processes 654321",
              "procs_running 3", "procs_blocked 0",
              "softirq 55555555 10 2000000 300 4000000 500 0 600 7000000 0 800000"]
    return "\n".join(lines) + "\n"


def cpuTicks(i: int, count: int) -> list[int]:
    """
    Plausible C{count} counters for CPU C{i}.
    """
    values = [100000 + 37 * i, 20 + i % 7, 40000 + 13 * i, 9000000 - 101 * i,
              3000 + i, 0, 500 + 3 * i, i % 4, 0, 0, 0, 0]
    return values[:count]


def meminfoText(kB: dict[str, int | None]) -> str:
    """
    C{/proc/meminfo} lines as C{"%-15s %8lu kB"} (keys with a C{None}
    value have no unit, as C{HugePages_Total}).
    """
    lines = []
    for key, value in kB.items():
        if key.startswith("HugePages_"):
            lines.append(f"{key + ':':<15} {value:>8}\n")
        else:
            lines.append(f"{key + ':':<15} {value:>8} kB\n")
    return "".join(lines)


MEMINFO_6X = {
    "MemTotal": 1056555656, "MemFree": 998877665, "MemAvailable": 1023456789,
    "Buffers": 1234567, "Cached": 23456789, "SwapCached": 0, "Active": 12345678,
    "Inactive": 11223344, "Active(anon)": 345678, "Inactive(anon)": 456789,
    "Active(file)": 11999999, "Inactive(file)": 10766555, "Unevictable": 0, "Mlocked": 0,
    "SwapTotal": 8388604, "SwapFree": 8388092, "Zswap": 0, "Zswapped": 0, "Dirty": 1024,
    "Writeback": 0, "AnonPages": 802467, "Mapped": 234567, "Shmem": 65432,
    "KReclaimable": 1987654, "Slab": 3456789, "SReclaimable": 1987654, "SUnreclaim": 1469135,
    "KernelStack": 65536, "PageTables": 34567, "SecPageTables": 0, "NFS_Unstable": 0,
    "Bounce": 0, "WritebackTmp": 0, "CommitLimit": 536666432, "Committed_AS": 4567890,
    "VmallocTotal": 34359738367, "VmallocUsed": 456789, "VmallocChunk": 0, "Percpu": 589824,
    "HardwareCorrupted": 0, "AnonHugePages": 358400, "ShmemHugePages": 0,
    "ShmemPmdMapped": 0, "FileHugePages": 0, "FilePmdMapped": 0, "HugePages_Total": 0,
    "HugePages_Free": 0, "HugePages_Rsvd": 0, "HugePages_Surp": 0, "Hugepagesize": 2048,
    "Hugetlb": 0, "DirectMap4k": 1234944, "DirectMap2M": 45678592, "DirectMap1G": 1030750208,
}

EPYC_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl "
    "nonstop_tsc cpuid extd_apicid aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 pcid "
    "sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm "
    "extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext "
    "perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 invpcid_single hw_pstate "
    "ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a "
    "rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc "
    "cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd "
    "amd_ppin brs arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid "
    "decodeassists pausefilter pfthreshold v_vmsave_vmload vgif v_spec_ctrl umip pku ospke "
    "vaes vpclmulqdq rdpid overflow_recov succor smca fsrm"
)


def epycCpuinfo(count: int) -> str:
    """
    An x86 C{/proc/cpuinfo} for a two-socket EPYC 7763 (64 cores, 2
    threads each, per socket); the clocks differ from CPU to CPU, as with
    C{cpufreq}.
    """
    blocks = []
    perSocket = count // 2
    for i in range(count):
        socket, thread = divmod(i, perSocket)
        core = thread % (perSocket // 2)
        mhz = 1500.0 + (i * 389 % 1951) + (i * 7 % 1000) / 1000
        if i == 0:
            mhz = 3243.215
        blocks.append(
            f"processor\t: {i}\n"
            "vendor_id\t: AuthenticAMD\n"
            "cpu family\t: 25\n"
            "model\t\t: 1\n"
            "model name\t: AMD EPYC 7763 64-Core Processor\n"
            "stepping\t: 1\n"
            "microcode\t: 0xa0011d1\n"
            f"cpu MHz\t\t: {mhz:.3f}\n"
            "cache size\t: 512 KB\n"
            f"physical id\t: {socket}\n"
            f"siblings\t: {perSocket}\n"
            f"core id\t\t: {core}\n"
            f"cpu cores\t: {perSocket // 2}\n"
            f"apicid\t\t: {socket * 128 + thread}\n"
            f"initial apicid\t: {socket * 128 + thread}\n"
            "fpu\t\t: yes\n"
            "fpu_exception\t: yes\n"
            "cpuid level\t: 16\n"
            "wp\t\t: yes\n"
            f"flags\t\t: {EPYC_FLAGS}\n"
            "bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass srso\n"
            "bogomips\t: 4890.81\n"
            "TLB size\t: 2560 4K pages\n"
            "clflush size\t: 64\n"
            "cache_alignment\t: 64\n"
            "address sizes\t: 48 bits physical, 48 bits virtual\n"
            "power management: ts ttp tm hwpstate cpb eff_freq_ro [13] [14]\n"
        )
    return "\n".join(blocks) + "\n"


def cpus256() -> dict[str, str]:
    """
    The C{cpus256/} tree.
    """
    return {
        "cpuinfo": epycCpuinfo(256),
        "stat": statText([cpuTicks(i, 10) for i in range(256)]),
        "meminfo": meminfoText(MEMINFO_6X),
        "loadavg": "37.52 35.10 30.07 260/3105 987654\n",
        "net/dev": NET_HEADER
        + netRow("lo", [5678901234, 4567890, 0, 0, 0, 0, 0, 0,
                        5678901234, 4567890, 0, 0, 0, 0, 0, 0], glued=False)
        + netRow("eno1", netCounters(40), glued=False),
    }


#: 32 interface names: short, long, and exactly 15 bytes (the most IFNAMSIZ allows).
IFACE_NAMES = (
    "lo", "eno1", "eno2", "eno3", "eno4", "eno5np0", "eno6np1", "enp65s0f0", "enp65s0f1",
    "enp129s0f0np0", "enp129s0f1np1", "enp193s0f0np0", "enp193s0f1np1", "ib0", "ib1",
    "bond0", "bond0.100", "bond0.2001", "br0", "br-1a2b3c4d5e6f", "docker0", "virbr0",
    "virbr0-nic", "tun0", "wg0", "vethabcdef12345", "veth0123456", "wlp0s20f3", "usb0",
    "macvtap0", "ens1f0v12", "vxlan.calico",
)


def ifaces32() -> dict[str, str]:
    """
    The C{ifaces32/} tree: a machine with 4 CPUs and 32 interfaces.
    """
    assert len(IFACE_NAMES) == 32 and len(set(IFACE_NAMES)) == 32
    rows = []
    for i, name in enumerate(IFACE_NAMES):
        counters = netCounters(i)
        if name == "eno2":  # exactly 8 digits: glued too ("%6s:%8llu")
            counters[0] = 12345678
        rows.append(netRow(name, counters))
    return {
        "cpuinfo": epycCpuinfo(4),
        "stat": statText([cpuTicks(i, 10) for i in range(4)]),
        "meminfo": meminfoText(MEMINFO_6X),
        "loadavg": "0.52 0.58 0.59 2/412 31337\n",
        "net/dev": NET_HEADER + "".join(rows),
    }


def missing() -> dict[str, str]:
    """
    The C{missing/} tree: C{cpuinfo}, C{stat} and C{net/dev} absent.
    """
    return {
        "meminfo": meminfoText(MEMINFO_6X),
        "loadavg": "1.00 0.50 0.25 1/99 4242\n",
    }


def oldKernel() -> dict[str, str]:
    """
    The C{old-kernel/} tree (see the module docstring).
    """
    cpus = [[123456, 789, 34567, 4567890], [223456, 1789, 44567, 4467890]]
    total = [sum(column) for column in zip(*cpus)]
    # 2.4 fs/proc/proc_misc.c: "cpu  %u %u %u %lu\n", "cpu%d %u %u %u %lu\n".
    stat = (
        "cpu  " + " ".join(map(str, total)) + "\n"
        + "".join(f"cpu{i} " + " ".join(map(str, c)) + "\n" for i, c in enumerate(cpus))
        + "page 5741 1808\nswap 1 0\n"
        "intr 9334795 9196131 2 0 0 0 0 0 0 1 0 0 0 121 0 137539 0\n"
        "disk_io: (3,0):(11412,6853,41154,4559,13616) \n"
        "ctxt 1990473\nbtime 1062191376\nprocesses 2915\n"
    )
    meminfo = (
        "        total:    used:    free:  shared: buffers:  cached:\n"
        "Mem:  261611520 255463424  6148096        0 19513344 152981504\n"
        "Swap: 271392768   684032 270708736\n"
        "MemTotal:       255480 kB\n"
        "MemFree:          6004 kB\n"
        "MemShared:           0 kB\n"
        "Buffers:         19056 kB\n"
        "Cached:         148832 kB\n"
        "SwapCached:        568 kB\n"
        "Active:         129712 kB\n"
        "Inactive:        71204 kB\n"
        "HighTotal:           0 kB\n"
        "HighFree:            0 kB\n"
        "LowTotal:       255480 kB\n"
        "LowFree:          6004 kB\n"
        "SwapTotal:      265032 kB\n"
        "SwapFree:       264364 kB\n"
    )
    # 2.6.35 arch/arm/kernel/setup.c, SMP: "Processor" once, then per CPU
    # "processor" and "BogoMIPS"; no clock.
    cpuinfo = (
        "Processor\t: ARMv7 Processor rev 10 (v7l)\n"
        "processor\t: 0\n"
        "BogoMIPS\t: 790.52\n\n"
        "processor\t: 1\n"
        "BogoMIPS\t: 790.52\n\n"
        "Features\t: swp half thumb fastmult vfp edsp neon vfpv3 \n"
        "CPU implementer\t: 0x41\n"
        "CPU architecture: 7\n"
        "CPU variant\t: 0x2\n"
        "CPU part\t: 0xc09\n"
        "CPU revision\t: 10\n\n"
        "Hardware\t: Freescale i.MX 6Quad SABRE Smart Device Board\n"
        "Revision\t: 63012\n"
        "Serial\t\t: 0000000000000000\n"
    )
    netdev = NET_HEADER + "".join([
        netRow("lo", [123456, 1234, 0, 0, 0, 0, 0, 0, 123456, 1234, 0, 0, 0, 0, 0, 0]),
        netRow("eth0", [987654321, 7654321, 3, 1, 0, 2, 0, 0,
                        123456789, 1234567, 0, 4, 0, 5, 0, 0]),
    ])
    return {
        "cpuinfo": cpuinfo,
        "stat": stat,
        "meminfo": meminfo,
        "loadavg": "0.08 0.03 0.01 1/47 2914\n",
        "net/dev": netdev,
    }


def extraFields() -> dict[str, str]:
    """
    The C{extra-fields/} tree: 4 CPUs, a future kernel's additions.
    """
    cpus = [cpuTicks(i, 10) + [1000 + i] for i in range(4)]
    meminfo = {"MemTotal": 16315240, "MemFree": 8123456, "FutureFirst": 77,
               "MemAvailable": 12345678, "Buffers": 234567, "Cached": 3456789,
               "Unaccepted": 0, "SwapTotal": 2097148, "SwapFree": 2097000,
               "Balloon": 1024, "GPUMemory": 4194304, "FutureLast": 12}
    text = meminfoText(meminfo) + "FutureText:     not a number at all\n"
    header = NET_HEADER.replace("compressed\n", "compressed future\n")
    header = header.replace("|  Transmit\n", "|  Transmit          |Future\n")
    netdev = header + "".join([
        netRow("lo", [5000, 50, 0, 0, 0, 0, 0, 0, 5000, 50, 0, 0, 0, 0, 0, 0, 99],
               glued=False),
        netRow("eth0", netCounters(9) + [123], glued=False),
    ])
    cpuinfo = epycCpuinfo(4).replace(
        "power management:", "future key\t: some value: with colons\nvmx flags\t: x y z\n"
        "power management:"
    )
    return {
        "cpuinfo": cpuinfo,
        "stat": statText(cpus, extra="cpu_pressure 1 2 3\n"),
        "meminfo": text,
        "loadavg": "0.25 0.50 0.75 1/123 4567 future\n",
        "net/dev": netdev,
    }


def aarch64() -> dict[str, str]:
    """
    The C{aarch64/} tree: a Raspberry Pi 4 under a 6.x arm64 kernel.
    """
    blocks = []
    for i in range(4):
        blocks.append(
            f"processor\t: {i}\n"
            "BogoMIPS\t: 108.00\n"
            "Features\t: fp asimd evtstrm crc32 cpuid\n"
            "CPU implementer\t: 0x41\n"
            "CPU architecture: 8\n"
            "CPU variant\t: 0x0\n"
            "CPU part\t: 0xd08\n"
            "CPU revision\t: 3\n"
        )
    cpuinfo = "\n".join(blocks) + (
        "\nRevision\t: c03111\n"
        "Serial\t\t: 100000008d5f3a2b\n"
        "Model\t\t: Raspberry Pi 4 Model B Rev 1.1\n"
    )
    meminfo = {
        "MemTotal": 3884504, "MemFree": 2956132, "MemAvailable": 3456780, "Buffers": 41236,
        "Cached": 512340, "SwapCached": 0, "Active": 350012, "Inactive": 402176,
        "SwapTotal": 102396, "SwapFree": 102396, "Dirty": 24, "Shmem": 20480,
        "CmaTotal": 524288, "CmaFree": 508216,
    }
    netdev = NET_HEADER + "".join([
        netRow("lo", [13345, 160, 0, 0, 0, 0, 0, 0, 13345, 160, 0, 0, 0, 0, 0, 0], glued=False),
        netRow("eth0", netCounters(3), glued=False),
        netRow("wlan0", [0] * 16, glued=False),
    ])
    return {
        "cpuinfo": cpuinfo,
        "stat": statText([cpuTicks(i, 10) for i in range(4)]),
        "meminfo": meminfoText(meminfo),
        "loadavg": "0.15 0.10 0.09 1/178 1291\n",
        "net/dev": netdev,
    }


def build() -> dict[str, dict[str, str]]:
    """
    Every tree: its name, then each file's path in it and text.
    """
    return {
        "cpus256": cpus256(),
        "ifaces32": ifaces32(),
        "missing": missing(),
        "old-kernel": oldKernel(),
        "extra-fields": extraFields(),
        "aarch64": aarch64(),
    }


def write(directory: str) -> None:
    """
    (Re)write every tree under C{directory}.
    """
    for tree, files in build().items():
        root = os.path.join(directory, tree)
        shutil.rmtree(root, ignore_errors=True)
        for relative, text in files.items():
            path = os.path.join(root, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", newline="") as f:
                f.write(text)


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
