"""Helpers of the test suite: servers and workers, the OTLP receiver, the MongoDB wire-protocol
server, the in-process harness, budget files and the stack's configuration. Fixtures are in
``conftest.py``; no test module imports another.
"""
