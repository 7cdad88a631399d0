"""The actions bound to SMS_Collection: the parameters validated like OData does (400),
the method failing like the SMS Provider's WMI method does (500)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.message import Message
from typing import Any, Final, Literal

from devstack.adminservice.calls import _CallInfo
from devstack.adminservice.entities import _DIRECT_RULE_TYPE
from devstack.adminservice.odata import (
    ODataError,
    _Answer,
    _json_answer,
    _json_body,
    _only_parameters,
)
from devstack.adminservice.routes import _Route
from devstack.adminservice.site import Site

_UINT32_MAX: Final = 2**32 - 1

# WMI error codes the method failures quote (as the SMS Provider reports them).
_WBEM_NOT_FOUND: Final = "0x80041002"
_WBEM_INVALID_PARAMETER: Final = "0x80041008"
_WBEM_ALREADY_EXISTS: Final = "0x80041019"
_WBEM_FAILED: Final = "0x80041001"


def _wmi_failure(method: str, what: str, wbem: str) -> ODataError:
    # The SMS Provider's method failed: the AdminService passes it on as a 500.
    return ODataError(
        500,
        f"WMI method SMS_Collection.{method} failed: {what} ({wbem})",
        code="InternalServerError",
    )


class Actions:
    """Runs AddMembershipRule, DeleteMembershipRule, RequestRefresh and
    AddMembershipRules against the site's collections."""

    def __init__(
        self,
        site: Site,
        *,
        duplicate_add: Literal["error", "ok", "keep"],
        delete_missing: Literal["error", "ok"],
        membership_needs_refresh: bool,
    ) -> None:
        self._site = site
        self.duplicate_add = duplicate_add
        self.delete_missing = delete_missing
        self.membership_needs_refresh = membership_needs_refresh

    def run(
        self,
        route: _Route,
        headers: Message,
        body: bytes,
        info: _CallInfo,
        context: str,
        options: Mapping[str, str],
    ) -> _Answer:
        """Carry out the route's action; its result, or an ODataError."""
        assert route.action is not None and route.collection_key is not None
        if options:
            raise ODataError(400, "An action takes no query options.")
        action = route.action
        params = _json_body(headers, body)
        key = route.collection_key.upper()
        if not self._site.has_collection(key):
            raise ODataError(
                404, f"No SMS_Collection instance with key '{route.collection_key}' was found."
            )
        result_context = f"{context}#AdminService.{action}_Result"

        if action == "RequestRefresh":
            _only_parameters(params, {"IncludeSubcollections"}, action)
            if not isinstance(params.get("IncludeSubcollections", False), bool):
                raise ODataError(400, "IncludeSubcollections must be a Boolean.")
            self._site.refresh(key)
            return _json_answer(201, {"@odata.context": result_context, "ReturnValue": 0})

        if action == "AddMembershipRules":
            _only_parameters(params, {"collectionRules"}, action)
            # Reported broken over REST (reference §3): never adds anything.
            raise _wmi_failure(action, "Generic failure", _WBEM_FAILED)

        resource_id, rule_name = _direct_rule(params, action, info)
        if key.startswith("SMS"):
            raise _wmi_failure(
                action, f"the built-in collection {key} cannot have membership rules changed",
                _WBEM_INVALID_PARAMETER,
            )  # fmt: skip
        if not self._site.has_device(resource_id):
            raise _wmi_failure(
                action,
                f"ResourceID {resource_id} is not an SMS_R_System resource",
                _WBEM_NOT_FOUND,
            )
        evaluate = not self.membership_needs_refresh
        if action == "AddMembershipRule":
            added = self._site.add_rule(
                key, resource_id, rule_name,
                evaluate=evaluate, keep_duplicate=self.duplicate_add == "keep",
            )  # fmt: skip
            if not added and self.duplicate_add == "error":
                raise _wmi_failure(
                    action,
                    f"a direct membership rule for ResourceID {resource_id} already "
                    f"exists in collection {key}",
                    _WBEM_ALREADY_EXISTS,
                )
        else:
            deleted = self._site.delete_rule(key, resource_id, evaluate=evaluate)
            if not deleted and self.delete_missing == "error":
                raise _wmi_failure(
                    action,
                    f"Not found: collection {key} has no direct membership rule for "
                    f"ResourceID {resource_id}",
                    _WBEM_NOT_FOUND,
                )
        document: dict[str, Any] = {"@odata.context": result_context, "ReturnValue": 0}
        if action == "AddMembershipRule":
            document["QueryID"] = 0  # direct rules have no query
        return _json_answer(201, document)


def _direct_rule(params: Mapping[str, Any], action: str, info: _CallInfo) -> tuple[int, str]:
    """The ResourceID and RuleName of a valid direct rule in the action's parameters."""
    _only_parameters(params, {"collectionRule"}, action)
    rule = params.get("collectionRule")
    if not isinstance(rule, dict):
        raise ODataError(
            400, f"The parameter 'collectionRule' of '{action}' is missing or not an object."
        )
    resource_id = rule.get("ResourceID")
    if isinstance(resource_id, int) and not isinstance(resource_id, bool):
        info.resource_id = resource_id  # logged even when the rest is refused
    odata_type = rule.get("@odata.type")
    if odata_type is None:
        raise ODataError(
            400,
            "The collectionRule needs an '@odata.type': "
            "AdminService.SMS_CollectionRule is abstract.",
        )
    if odata_type != _DIRECT_RULE_TYPE:
        raise ODataError(
            400,
            f"The type '{odata_type}' is not supported here; only "
            f"'{_DIRECT_RULE_TYPE}' is simulated.",
        )
    extra = sorted(rule.keys() - {"@odata.type", "ResourceClassName", "RuleName", "ResourceID"})
    if extra:
        raise ODataError(
            400,
            f"The property '{extra[0]}' does not exist on type "
            "'AdminService.SMS_CollectionRuleDirect'.",
        )
    rule_name = rule.get("RuleName", "")
    if rule_name is None:
        rule_name = ""
    if not isinstance(rule_name, str):
        raise ODataError(400, "RuleName must be a string (Edm.String).")
    class_name = rule.get("ResourceClassName")
    if not isinstance(class_name, str):
        raise ODataError(400, "ResourceClassName is required and must be a string (Edm.String).")
    if resource_id is None:
        raise ODataError(400, "ResourceID is required.")
    if isinstance(resource_id, bool) or not isinstance(resource_id, int):
        raise ODataError(
            400,
            f"Cannot convert the literal '{json.dumps(resource_id)}' to the expected "
            "type 'Edm.Int64'.",
        )
    if not 0 < resource_id <= _UINT32_MAX:
        raise ODataError(400, f"ResourceID {resource_id} is out of range.")
    if class_name.casefold() != "sms_r_system":
        raise _wmi_failure(
            action,
            f"ResourceClassName '{class_name}' is not SMS_R_System",
            _WBEM_INVALID_PARAMETER,
        )
    return resource_id, rule_name
