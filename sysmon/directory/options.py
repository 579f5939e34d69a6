"""
Choosing a host directory from a daemon's options.

netdump and recvstats both take C{--hosts FILE} (the file backend) or
C{--directory URL} and/or C{--directory-config FILE} (the LDAP backend).
The choice is made and checked while the options are parsed, before the
reactor runs, so a bad hosts file, a wrong bind password or an untrusted
certificate stops the daemon at start with one clear line; an LDAP server
that is merely out of reach does not (the daemon runs, answers from magic
files and C{--ip-base}, and tries the server again).
"""

from __future__ import annotations

from typing import Any

import attrs

from sysmon.directory import DirectoryError, IHostDirectory
from sysmon.directory.ldap import DEFAULT_CONFIG, LDAPSettings, loadSettings, verify

__all__ = ["DIRECTORY_OPTIONS", "DirectoryChoice", "chooseDirectory"]

DIRECTORY_OPTIONS = [
    ["directory", None, None,
     "LDAP host directory: ldap://host[:port]/BASE-DN or ldaps://... (the other LDAP "
     "settings go in --directory-config)."],
    ["directory-config", None, None,
     "LDAP directory settings file: url, base, bind_dn, password_file, starttls, ca_file, "
     f"filter, map.*, ttl, timeout, retry (sample: conf/ldap/directory.conf; usually "
     f"{DEFAULT_CONFIG})."],
]
"""C{optParameters} entries for the LDAP backend."""


@attrs.define
class DirectoryChoice:
    """
    The host directory the options chose, checked.

    @ivar hosts: the file backend, already read.
    @ivar ldap: the LDAP settings.
    @ivar unreachable: why the LDAP server could not be reached at start.
    """

    hosts: Any = None
    ldap: LDAPSettings | None = None
    unreachable: str | None = None

    def make(self, reactor: Any = None) -> IHostDirectory | None:
        """
        The directory, or L{None} when none was chosen.
        """
        if self.hosts is not None:
            return self.hosts
        if self.ldap is not None:
            from sysmon.directory.ldap import LDAPHostDirectory

            return LDAPHostDirectory(self.ldap, reactor=reactor, unreachable=self.unreachable)
        return None


def chooseDirectory(hosts: str | None = None, url: str | None = None,
                    configFile: str | None = None) -> DirectoryChoice:
    """
    Read the hosts file, or load the LDAP settings and try them once
    (blocking: call it before the reactor runs).

    @raise DirectoryError: both kinds given, a bad hosts file or settings
        file (file:line), or an LDAP server that refuses the credentials or
        whose certificate is not trusted.
    """
    if hosts and (url or configFile):
        raise DirectoryError(
            "give --hosts (a hosts file) or --directory/--directory-config (LDAP), not both")
    if hosts:
        from sysmon.directory.file import FileHostDirectory

        return DirectoryChoice(hosts=FileHostDirectory(hosts))
    if url or configFile:
        settings = loadSettings(url or None, configFile or None)
        return DirectoryChoice(ldap=settings, unreachable=verify(settings))
    return DirectoryChoice()
