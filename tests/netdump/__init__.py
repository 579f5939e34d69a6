"""
Tests of the netdump server, its codec and its client simulator.
"""
