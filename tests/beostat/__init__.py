"""
Tests for recvstats, sendstats, the shared-memory file and its readers.
"""
