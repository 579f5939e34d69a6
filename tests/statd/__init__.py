"""
Tests of statd, the NSM host-status monitor.
"""
