"""The AdminService schema the simulator serves: the entity types (WMI property name →
EDM type), their keys and the bound actions, as data and as the CSDL ``$metadata``
document; and the entities built from the simulated records and from the site
database's rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from devstack.datagen import GeneratedDevice

_ACTIONS: Final = (
    "AddMembershipRule",
    "DeleteMembershipRule",
    "RequestRefresh",
    "AddMembershipRules",
)
_DIRECT_RULE_TYPE: Final = "#AdminService.SMS_CollectionRuleDirect"
#: The built-in collection every other one is limited to unless a test says otherwise.
ALL_SYSTEMS: Final = "SMS00001"
ALL_SYSTEMS_NAME: Final = "All Systems"

# -- the entity types: WMI property name -> EDM type -----------------------------------

_STRING: Final = "Edm.String"
_INT32: Final = "Edm.Int32"
_INT64: Final = "Edm.Int64"
_BOOL: Final = "Edm.Boolean"
_DATE: Final = "Edm.DateTimeOffset"

_SYSTEM_PROPERTIES: Final[dict[str, str]] = {
    "ResourceId": _INT64,
    "Name": _STRING,
    "NetbiosName": _STRING,
    "SMSUniqueIdentifier": _STRING,
    "ResourceDomainORWorkgroup": _STRING,
    "FullDomainName": _STRING,
    "Client": _INT32,
    "Active": _INT32,
    "Obsolete": _INT32,
    "Decommissioned": _INT32,
    "CreationDate": _DATE,
}
_MEMBERSHIP_PROPERTIES: Final[dict[str, str]] = {
    "CollectionID": _STRING,
    "ResourceID": _INT64,
    "Name": _STRING,
    "IsDirect": _BOOL,
}
_COLLECTION_PROPERTIES: Final[dict[str, str]] = {
    "CollectionID": _STRING,
    "Name": _STRING,
    "MemberCount": _INT32,
    "CollectionType": _INT32,
    "LimitToCollectionID": _STRING,
    "LimitToCollectionName": _STRING,
    "ServiceWindowsCount": _INT32,
}
#: SMS_DeploymentSummary: every documented property (UInt32 and SInt32 as Edm.Int32).
_DEPLOYMENT_SUMMARY_PROPERTIES: Final[dict[str, str]] = {
    "ApplicationName": _STRING,
    "AssignmentID": _INT32,
    "CI_ID": _INT32,
    "CollectionID": _STRING,
    "CollectionName": _STRING,
    "CreationTime": _DATE,
    "DeploymentID": _STRING,
    "DeploymentIntent": _INT32,
    "DeploymentTime": _DATE,
    "DesiredConfigType": _INT32,
    "EnforcementDeadline": _DATE,
    "FeatureType": _INT32,
    "ModelName": _STRING,
    "ModificationTime": _DATE,
    "NumberErrors": _INT32,
    "NumberInProgress": _INT32,
    "NumberOther": _INT32,
    "NumberSuccess": _INT32,
    "NumberTargeted": _INT32,
    "NumberUnknown": _INT32,
    "ObjectTypeID": _INT32,
    "PackageID": _STRING,
    "PolicyModelID": _INT32,
    "ProgramName": _STRING,
    "SecuredObjectId": _STRING,
    "SoftwareName": _STRING,
    "SummarizationTime": _DATE,
    "SummaryType": _INT32,
}
#: SMS_CollectionSettings: the properties a query answers (the lazy ones are below).
_COLLECTION_SETTINGS_PROPERTIES: Final[dict[str, str]] = {
    "ClusterCount": _INT32,
    "ClusterPercentage": _INT32,
    "ClusterTimeout": _INT32,
    "CollectionID": _STRING,
    "CollectionVariablePrecedence": _INT32,
    "LastModificationTime": _DATE,
    "LocaleID": _INT32,
    "PollingInterval": _INT32,
    "PollingIntervalEnabled": _BOOL,
    "PostAction": _STRING,
    "PreAction": _STRING,
    "RebootCountdown": _INT32,
    "RebootCountdownEnabled": _BOOL,
    "RebootCountdownFinalWindow": _INT32,
    "SourceSite": _STRING,
    "UseCluster": _INT32,
    "UseClusterPercentage": _INT32,
}
#: The lazy properties of a keyed class (name -> element type): only its key GET
#: answers them; a query refuses them in ``$select`` as properties it does not have.
_LAZY: Final[dict[str, dict[str, str]]] = {
    "SMS_Collection": {"CollectionRules": "AdminService.SMS_CollectionRule"},
    "SMS_CollectionSettings": {
        "CollectionVariables": "AdminService.SMS_CollectionVariable",
        "PowerConfigs": "AdminService.SMS_PowerConfig",
        "ServiceWindows": "AdminService.SMS_ServiceWindow",
    },
}
#: SMS_ServiceWindow, embedded in SMS_CollectionSettings.ServiceWindows.
_SERVICE_WINDOW_PROPERTIES: Final[dict[str, str]] = {
    "Description": _STRING,
    "Duration": _INT32,
    "IsEnabled": _BOOL,
    "IsGMT": _BOOL,
    "Name": _STRING,
    "RecurrenceType": _INT32,
    "ServiceWindowID": _STRING,
    "ServiceWindowSchedules": _STRING,
    "ServiceWindowType": _INT32,
    "StartTime": _DATE,
}
#: What a GET without ``$select`` answers where it is not every property: the
#: simulator's first SMS_Collection shape (the real service answers every non-lazy
#: property; the app always names the properties it reads).
_DEFAULT_PROPERTIES: Final[dict[str, tuple[str, ...]]] = {
    "SMS_Collection": (
        "CollectionID",
        "Name",
        "MemberCount",
        "CollectionType",
        "LimitToCollectionID",
    ),
}
#: SMS_StatusMessage: the columns of ``v_StatusMessage`` the SMS Provider class shows.
_STATUS_MESSAGE_PROPERTIES: Final[dict[str, str]] = {
    "RecordID": _INT64,
    "MessageID": _INT32,
    "Severity": _INT32,
    "MessageType": _INT32,
    "MachineName": _STRING,
    "SiteCode": _STRING,
    "Time": _DATE,
    "Component": _STRING,
    "ModuleName": _STRING,
    "ProcessID": _INT32,
    "ThreadID": _INT32,
    "Win32Error": _INT32,
    "TopLevelSiteCode": _STRING,
}
_INSERTION_STRINGS: Final = tuple(f"InsString{number}" for number in range(1, 11))
_STAT_MSG_WITH_INS_STRINGS_PROPERTIES: Final[dict[str, str]] = {
    **_STATUS_MESSAGE_PROPERTIES,
    **dict.fromkeys(_INSERTION_STRINGS, _STRING),
    "ResourceID": _INT32,  # "may be NULL": no column in the stand-in, see status_messages
}
_INS_STRING_PROPERTIES: Final[dict[str, str]] = {
    "RecordID": _INT64,
    "InsStrIndex": _INT32,  # 0-based: 0 is InsertionString1
    "InsStrValue": _STRING,
}
_SITE_PROPERTIES: Final[dict[str, str]] = {
    "SiteCode": _STRING,
    "SiteName": _STRING,
    "Type": _INT32,
    "Version": _STRING,
    "Status": _INT32,
}
#: The entity sets read from the site database (``status_messages``), not from ``site``.
_STATUS_MESSAGE_SETS: Final = (
    "SMS_StatusMessage",
    "SMS_StatMsgWithInsStrings",
    "SMS_StatMsgInsStrings",
)
_ENTITY_SETS: Final[dict[str, dict[str, str]]] = {
    "SMS_R_System": _SYSTEM_PROPERTIES,
    "SMS_FullCollectionMembership": _MEMBERSHIP_PROPERTIES,
    "SMS_Collection": _COLLECTION_PROPERTIES,
    "SMS_StatusMessage": _STATUS_MESSAGE_PROPERTIES,
    "SMS_StatMsgWithInsStrings": _STAT_MSG_WITH_INS_STRINGS_PROPERTIES,
    "SMS_StatMsgInsStrings": _INS_STRING_PROPERTIES,
    "SMS_Site": _SITE_PROPERTIES,
    "SMS_DeploymentSummary": _DEPLOYMENT_SUMMARY_PROPERTIES,
    "SMS_CollectionSettings": _COLLECTION_SETTINGS_PROPERTIES,
}
_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "SMS_R_System": ("ResourceId",),
    "SMS_FullCollectionMembership": ("ResourceID",),
    "SMS_Collection": ("CollectionID",),
    "SMS_StatusMessage": ("RecordID",),
    "SMS_StatMsgWithInsStrings": ("RecordID",),
    "SMS_StatMsgInsStrings": ("RecordID", "InsStrIndex"),
    "SMS_Site": ("SiteCode",),
    "SMS_DeploymentSummary": ("DeploymentID",),
    "SMS_CollectionSettings": ("CollectionID",),
}

Entity = dict[str, Any]


# -- the records and their entities ----------------------------------------------------


@dataclass(slots=True)
class _Collection:
    collection_id: str
    name: str
    # (ResourceID, RuleName) in the order added; a kept duplicate is a second entry.
    rules: list[tuple[int, str]] = field(default_factory=list)
    counts: Counter[int] = field(default_factory=Counter)  # direct rules per ResourceID
    members: dict[int, bool] = field(default_factory=dict)  # ResourceID -> IsDirect, evaluated
    stale: bool = False  # the rules changed since the last evaluation
    # The limiting collection a test set (None: All Systems, which limits nothing).
    limit_to: str | None = None
    settings: bool = False  # an SMS_CollectionSettings instance exists
    windows: list[Entity] = field(default_factory=list)  # its ServiceWindows


def _iso(value: datetime, *, fraction: bool = False) -> str:
    """``2026-11-20T08:01:00Z`` (a naive value is UTC); with ``fraction``, the fraction
    of a second too when there is one, trailing zeros cut (``08:01:00.12Z``), as .NET
    writes a DateTimeOffset."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    text = aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction and aware.microsecond:
        text += f".{aware.microsecond:06d}".rstrip("0")
    return text + "Z"


def _system_entity(device: GeneratedDevice) -> Entity:
    return {
        "ResourceId": device.resource_id,
        "Name": device.name,
        "NetbiosName": device.netbios_name,
        "SMSUniqueIdentifier": device.sms_unique_identifier,
        "ResourceDomainORWorkgroup": device.domain,
        "FullDomainName": device.full_domain,
        "Client": device.client,
        "Active": device.active,
        "Obsolete": device.obsolete,
        "Decommissioned": device.decommissioned,
        "CreationDate": _iso(device.creation_date),
    }


def _collection_entity(collection: _Collection, limit_name: str = "") -> Entity:
    """Every non-lazy property; ``limit_name``: the limiting collection's name."""
    built_in = collection.collection_id.startswith("SMS")
    return {
        "CollectionID": collection.collection_id,
        "Name": collection.name,
        "MemberCount": len(collection.members),
        "CollectionType": 2,  # device collection
        "LimitToCollectionID": collection.limit_to or ("" if built_in else ALL_SYSTEMS),
        "LimitToCollectionName": limit_name,
        "ServiceWindowsCount": len(collection.windows),
    }


# -- the metadata document ----------------------------------------------------------------


def _csdl() -> bytes:
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "<edmx:DataServices>",
        '<Schema Namespace="AdminService" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
    for entity_set, properties in _ENTITY_SETS.items():
        lines.append(f'<EntityType Name="{entity_set}">')
        refs = "".join(f'<PropertyRef Name="{key}"/>' for key in _KEYS[entity_set])
        lines.append(f"<Key>{refs}</Key>")
        lines.extend(f'<Property Name="{n}" Type="{t}"/>' for n, t in properties.items())
        lines.extend(
            f'<Property Name="{n}" Type="Collection({t})"/>'
            for n, t in _LAZY.get(entity_set, {}).items()
        )
        lines.append("</EntityType>")
    lines += [
        '<ComplexType Name="SMS_CollectionRule" Abstract="true">',
        '<Property Name="RuleName" Type="Edm.String"/></ComplexType>',
        '<ComplexType Name="SMS_CollectionRuleDirect" BaseType="AdminService.SMS_CollectionRule">',
        '<Property Name="ResourceClassName" Type="Edm.String"/>',
        '<Property Name="ResourceID" Type="Edm.Int64"/></ComplexType>',
        '<ComplexType Name="SMS_ServiceWindow">',
        *(f'<Property Name="{n}" Type="{t}"/>' for n, t in _SERVICE_WINDOW_PROPERTIES.items()),
        "</ComplexType>",
        '<ComplexType Name="SMS_CollectionVariable">',
        '<Property Name="Name" Type="Edm.String"/><Property Name="Value" Type="Edm.String"/>',
        '<Property Name="IsMasked" Type="Edm.Boolean"/></ComplexType>',
        '<ComplexType Name="SMS_PowerConfig">',
        '<Property Name="ConfigID" Type="Edm.String"/></ComplexType>',
    ]
    for action in _ACTIONS:
        lines.append(f'<Action Name="{action}" IsBound="true">')
        lines.append('<Parameter Name="bindingParameter" Type="AdminService.SMS_Collection"/>')
        if action in ("AddMembershipRule", "DeleteMembershipRule"):
            lines.append(
                '<Parameter Name="collectionRule" Type="AdminService.SMS_CollectionRule"/>'
            )
        elif action == "AddMembershipRules":
            lines.append(
                '<Parameter Name="collectionRules" '
                'Type="Collection(AdminService.SMS_CollectionRule)"/>'
            )
        else:
            lines.append('<Parameter Name="IncludeSubcollections" Type="Edm.Boolean"/>')
        lines.append("</Action>")
    lines.append('<EntityContainer Name="Container">')
    lines.extend(
        f'<EntitySet Name="{name}" EntityType="AdminService.{name}"/>' for name in _ENTITY_SETS
    )
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines).encode("utf-8")


_METADATA: Final = _csdl()
