"""The remediation queue: the wire encoding, sending, the poison queue, the host's queue
options, and the local stand-in for the Functions host that the command line drains with.
"""
