"""
Tests of the host directory's LDAP backend, against a real OpenLDAP slapd
that the tests start (L{tests.directory.slapd}).
"""
