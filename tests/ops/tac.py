"""
The shipped C{conf/sysmon.tac} in a twistd child process, for tests: run
from a fresh working directory (so the shipped ini's relative C{var/...}
paths land in the test's temporary directory, and C{conf} is a link to the
checkout's), with the shipped C{conf/sysmon.ini} changed only where a test
says (free ports instead of the fixed ones, extra keys).  The child is
stopped by pid when the test ends, even when it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence

from sysmon.testing import TwistdChild, freePort

__all__ = ["CHECKOUT", "SHIPPED_INI", "TAC", "Tac", "editIni"]

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAC = os.path.join(CHECKOUT, "conf", "sysmon.tac")
SHIPPED_INI = os.path.join(CHECKOUT, "conf", "sysmon.ini")

_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*$")
_KEYLINE = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*=")


def editIni(text: str, changes: Mapping[str, Mapping[str, str | None]]) -> str:
    """
    C{text} (an ini) with C{changes[section][key]} set: the key's line
    replaced (C{None}: removed), or added at the end of the section (the
    section added at the end when missing).
    """
    pending = {section: dict(keys) for section, keys in changes.items()}
    out: list[str] = []
    section: str | None = None

    def flush() -> None:
        if section is None:
            return
        for key, value in pending.pop(section, {}).items():
            if value is not None:
                out.append(f"{key} = {value}")

    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            flush()
            section = header.group(1).lower()
            out.append(line)
            continue
        keyline = _KEYLINE.match(line)
        if section is not None and keyline and keyline.group(1) in pending.get(section, {}):
            value = pending[section].pop(keyline.group(1))
            if value is not None:
                out.append(f"{keyline.group(1)} = {value}")
            continue
        out.append(line)
    flush()
    for name, keys in pending.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {v}" for k, v in keys.items() if v is not None)
    return "\n".join(out) + "\n"


class Tac:
    """
    A running C{twistd -n -y conf/sysmon.tac}.

    @ivar root: its working directory, removed at the end of the test.
    @ivar ports: the ports it was given: C{netdump}, C{statd},
        C{recvstats}, C{http}.
    @ivar child: the L{TwistdChild}.
    """

    def __init__(self, case: Any, changes: Mapping[str, Mapping[str, str | None]] = {},
                 *, fixedPorts: bool = False) -> None:
        # Short, so that var/keepalive/control fits a UNIX socket address
        # (107 bytes), which a path under _trial_temp may not.
        self.root = tempfile.mkdtemp(prefix="sysmon-tac-")
        case.addCleanup(shutil.rmtree, self.root, True)
        os.symlink(os.path.join(CHECKOUT, "conf"), os.path.join(self.root, "conf"))
        if fixedPorts:
            self.ports = {"netdump": 6666, "statd": 32765, "recvstats": 3040, "http": 8080}
            ports: dict[str, dict[str, str | None]] = {}
        else:
            self.ports = {name: freePort() for name in ("netdump", "statd", "recvstats", "http")}
            ports = {
                "netdump": {"port": str(self.ports["netdump"])},
                "statd": {"port": str(self.ports["statd"])},
                "recvstats": {"port": str(self.ports["recvstats"])},
                "sendstats": {"master": f"127.0.0.1:{self.ports['recvstats']}"},
                "http": {"port": str(self.ports["http"])},
            }
        merged = {s: dict(k) for s, k in ports.items()}
        for section, keys in changes.items():
            merged.setdefault(section, {}).update(keys)
        with open(SHIPPED_INI, encoding="utf-8") as f:
            self.iniText = editIni(f.read(), merged)
        self.ini = os.path.join(self.root, "test.ini")
        with open(self.ini, "w", encoding="utf-8") as f:
            f.write(self.iniText)
        self.child = TwistdChild(case, self.root)

    def start(self, twistdArgs: Sequence[str] = (), env: Mapping[str, str] | None = None,
              wait: str | None = "sysmon started", prefix: Sequence[str] = (),
              python: str = sys.executable) -> Tac:
        """
        Start twistd (C{twistdArgs} before C{-y}) under C{python} and wait
        for C{wait} in its log.
        """
        environ = dict(os.environ if env is None else env)
        environ["SYSMON_INI"] = self.ini
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (CHECKOUT, environ.get("PYTHONPATH", "")) if p)
        if env is None:
            environ.pop("NOTIFY_SOCKET", None)
        self.child.spawn(*twistdArgs, "-y", TAC, env=environ, prefix=prefix, python=python)
        if wait:
            self.child.waitLog(wait)
        return self

    @property
    def pid(self) -> int:
        assert self.child.process is not None
        return self.child.process.pid

    def path(self, *parts: str) -> str:
        """
        A path under the working directory.
        """
        return os.path.join(self.root, *parts)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['http']}{path}"

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        """
        GET C{path} from its HTTP port (blocking: the tac is another
        process): status, headers, body.
        """
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def status(self) -> Any:
        """
        C{/status.json}, decoded.
        """
        code, _, body = self.get("/status.json")
        assert code == 200, (code, body[:200])
        return json.loads(body)

    def log(self) -> str:
        return self.child.log()
