"""Stage 2, the remediation: one remediation request → one recorded outcome. The
remediator, the blast-radius guard, held adds and the audit log.
"""
