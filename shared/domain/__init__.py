"""The domain core: status messages, rules, devices, remediation requests, outcomes, the
clock, and the ports (Protocols) through which the stages meet the world.

Plain Python and pydantic only: nothing here knows Azure, ODBC or HTTP.
"""
