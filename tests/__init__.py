"""
sysmon's tests: run them with C{python -m twisted.trial tests} from the
repository root.
"""
