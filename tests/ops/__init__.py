"""
Tests for sysmon.ops: the tac and its ini, metrics, the status page, logging, systemd units.
"""
