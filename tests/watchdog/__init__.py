"""
Tests of the watchdog daemon (sysmon.watchdog).
"""
