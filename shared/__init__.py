"""cm-remediate: ConfigMgr status messages in, remediation collection membership out.

This package is the plain-Python core. It never imports ``azure.functions``: the
triggers in ``triggers/`` decode their input and call into it.
"""

__version__ = "0.1.0"
