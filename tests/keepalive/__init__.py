"""
Tests for L{sysmon.keepalive}.
"""
