"""Where membership changes go: the AdminService (through the cloud management gateway),
the ConfigMgr WebService (SOAP) or a customer REST service. Each satisfies
``shared.domain.ports.MembershipTarget``.
"""
