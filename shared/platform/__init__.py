"""The platform layer: settings, connection strings, storage accounts, the HTTP pipeline,
tokens, secret redaction, the retry helper and bounded probes.

Knows nothing of status messages or collections; the stages build on it.
"""
