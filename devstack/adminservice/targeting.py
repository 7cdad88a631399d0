"""What aims at a simulated collection besides its rules: deployments
(``SMS_DeploymentSummary``) and maintenance windows (``SMS_ServiceWindow`` objects,
embedded in the lazy ``ServiceWindows`` of ``SMS_CollectionSettings``), built as the
SMS Provider shows them. The codes are Microsoft's documented ones, except
``DeploymentIntent`` (see below).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from devstack.adminservice.entities import Entity, _iso

# SMS_DeploymentSummary.FeatureType (documented on the class's page).
APPLICATION: Final = 1
PROGRAM: Final = 2
SOFTWARE_UPDATE: Final = 5
BASELINE: Final = 6
TASK_SEQUENCE: Final = 7
# SMS_DeploymentSummary.DeploymentIntent: 1 Required, 2 Available (3 Simulate) as
# community queries of v_DeploymentSummary read it; Microsoft's page only points to
# SMS_AppDeploymentAssetDetails, whose 1/2/3 are Install/Uninstall/Preflight. Unverified.
REQUIRED: Final = 1
AVAILABLE: Final = 2
# SMS_ServiceWindow.ServiceWindowType (documented).
GENERAL: Final = 1
SOFTWARE_UPDATES: Final = 4
TASK_SEQUENCES: Final = 5

#: Configuration-item based deployments are SMS_CIAssignment objects (ObjectTypeID
#: 200, a GUID DeploymentID); programs and task sequences are advertisements (201).
_CI_BASED: Final = frozenset({APPLICATION, SOFTWARE_UPDATE, BASELINE, 11, 28})
_CREATED: Final = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
#: A recurring schedule token from the class's documentation (every day, 1:00 AM).
_DAILY_AT_ONE: Final = "0034394008100008"


def deployment_id(collection_id: str, feature_type: int, serial: int) -> str:
    """A DeploymentID of the kind the site makes: an advertisement ID for programs and
    task sequences (site code + 5 hex digits), a GUID for the others."""
    if feature_type in _CI_BASED:
        return f"{{5D7E0000-0000-4000-8000-{serial:012X}}}"
    return f"{collection_id[:3]}{0x20000 + serial:05X}"


def deployment_entity(
    *,
    deployment: str,
    collection_id: str,
    collection_name: str,
    name: str,
    feature_type: int,
    intent: int,
    program: str,
    serial: int,
) -> Entity:
    """One SMS_DeploymentSummary row, every documented property."""
    ci_based = feature_type in _CI_BASED
    package = "" if ci_based else f"{collection_id[:3]}{0x30000 + serial:05X}"
    return {
        "ApplicationName": name if feature_type == APPLICATION else "",
        "AssignmentID": 16777216 + serial if ci_based else 0,
        "CI_ID": 16780000 + serial if ci_based else 0,
        "CollectionID": collection_id,
        "CollectionName": collection_name,
        "CreationTime": _iso(_CREATED),
        "DeploymentID": deployment,
        "DeploymentIntent": intent,
        "DeploymentTime": _iso(_CREATED),
        "DesiredConfigType": 1,
        "EnforcementDeadline": _iso(_CREATED + timedelta(days=7)) if intent == REQUIRED else None,
        "FeatureType": feature_type,
        "ModelName": f"ScopeId_00000000/Application_{serial}" if ci_based else "",
        "ModificationTime": _iso(_CREATED),
        "NumberErrors": 0,
        "NumberInProgress": 0,
        "NumberOther": 0,
        "NumberSuccess": 0,
        "NumberTargeted": 0,
        "NumberUnknown": 0,
        "ObjectTypeID": 200 if ci_based else 201,
        "PackageID": package,
        "PolicyModelID": 16790000 + serial if ci_based else 0,
        "ProgramName": program if not ci_based else "",
        "SecuredObjectId": package or f"ScopeId_00000000/Application_{serial}",
        "SoftwareName": name,
        "SummarizationTime": _iso(_CREATED),
        "SummaryType": 1 if ci_based else 2,
    }


def service_window_entity(
    *,
    window_id: str,
    name: str,
    description: str,
    enabled: bool,
    window_type: int,
    duration_minutes: int,
) -> Entity:
    """One SMS_ServiceWindow, as embedded in ``ServiceWindows`` (its ``@odata.type``
    as OData writes a derived or embedded complex value; whether the AdminService does
    is unverified)."""
    return {
        "@odata.type": "#AdminService.SMS_ServiceWindow",
        "Description": description,
        "Duration": duration_minutes,
        "IsEnabled": enabled,
        "IsGMT": False,
        "Name": name,
        "RecurrenceType": 2,  # DAILY
        "ServiceWindowID": window_id,
        "ServiceWindowSchedules": _DAILY_AT_ONE,
        "ServiceWindowType": window_type,
        "StartTime": _iso(_CREATED.replace(hour=1)),
    }


def settings_entity(collection_id: str, windows: list[Entity] | None) -> Entity:
    """The SMS_CollectionSettings of a collection: what a query answers, and with
    ``windows`` the lazy properties too (what the key GET answers)."""
    entity: Entity = {
        "ClusterCount": 1,
        "ClusterPercentage": 50,
        "ClusterTimeout": 600,
        "CollectionID": collection_id,
        "CollectionVariablePrecedence": 1,
        "LastModificationTime": _iso(_CREATED),
        "LocaleID": 1033,
        "PollingInterval": 5,
        "PollingIntervalEnabled": False,
        "PostAction": "",
        "PreAction": "",
        "RebootCountdown": 5,
        "RebootCountdownEnabled": False,
        "RebootCountdownFinalWindow": 5,
        "SourceSite": collection_id[:3],
        "UseCluster": 0,
        "UseClusterPercentage": 1,
    }
    if windows is not None:
        entity["CollectionVariables"] = []
        entity["PowerConfigs"] = []
        entity["ServiceWindows"] = [dict(window) for window in windows]
    return entity
