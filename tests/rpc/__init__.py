"""
Tests of the shared ONC RPC code.
"""
