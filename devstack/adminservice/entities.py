"""The AdminService schema the simulator serves: the entity types (WMI property name →
EDM type), their keys and the bound actions, as data and as the CSDL ``$metadata``
document; and the entities built from the simulated records."""

from __future__ import annotations

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
}
_ENTITY_SETS: Final[dict[str, dict[str, str]]] = {
    "SMS_R_System": _SYSTEM_PROPERTIES,
    "SMS_FullCollectionMembership": _MEMBERSHIP_PROPERTIES,
    "SMS_Collection": _COLLECTION_PROPERTIES,
}
_KEYS: Final = {
    "SMS_R_System": "ResourceId",
    "SMS_FullCollectionMembership": "ResourceID",
    "SMS_Collection": "CollectionID",
}

Entity = dict[str, Any]


# -- the records and their entities ----------------------------------------------------


@dataclass(slots=True)
class _Collection:
    collection_id: str
    name: str
    rules: dict[int, str] = field(default_factory=dict)  # ResourceID -> RuleName, in order
    members: set[int] = field(default_factory=set)  # as last evaluated


def _iso(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _collection_entity(collection: _Collection) -> Entity:
    return {
        "CollectionID": collection.collection_id,
        "Name": collection.name,
        "MemberCount": len(collection.members),
        "CollectionType": 2,  # device collection
        "LimitToCollectionID": "" if collection.collection_id.startswith("SMS") else "SMS00001",
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
        lines.append(f'<Key><PropertyRef Name="{_KEYS[entity_set]}"/></Key>')
        lines.extend(f'<Property Name="{n}" Type="{t}"/>' for n, t in properties.items())
        if entity_set == "SMS_Collection":
            lines.append(
                '<Property Name="CollectionRules" '
                'Type="Collection(AdminService.SMS_CollectionRule)"/>'
            )
        lines.append("</EntityType>")
    lines += [
        '<ComplexType Name="SMS_CollectionRule" Abstract="true">',
        '<Property Name="RuleName" Type="Edm.String"/></ComplexType>',
        '<ComplexType Name="SMS_CollectionRuleDirect" BaseType="AdminService.SMS_CollectionRule">',
        '<Property Name="ResourceClassName" Type="Edm.String"/>',
        '<Property Name="ResourceID" Type="Edm.Int64"/></ComplexType>',
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
