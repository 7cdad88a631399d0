"""Local stand-ins for the services cm-remediate talks to.

Nothing here is imported by the function app: the stand-ins exist so the tests, the
demo and the benchmarks run the production code paths against real servers
(PostgreSQL through ODBC, Azurite) on this machine.
"""
