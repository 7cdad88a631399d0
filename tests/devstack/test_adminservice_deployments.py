"""What aims at a collection in the AdminService simulator: deployments
(SMS_DeploymentSummary), maintenance windows (the lazy ServiceWindows of
SMS_CollectionSettings, on the key GET only) and the limiting collection, which keeps
devices outside it from becoming members."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from devstack.adminservice import AdminServiceSimulator, TokenSigner
from devstack.adminservice.targeting import (
    APPLICATION,
    AVAILABLE,
    GENERAL,
    PROGRAM,
    REQUIRED,
    SOFTWARE_UPDATES,
    TASK_SEQUENCE,
)
from tests.helpers import device

ISSUER = "https://sts.windows.net/8d5c7a5e-0000-4000-8000-000000000015/"
ADMIN = "cm-svc@contoso.com"
DIRECT = "#AdminService.SMS_CollectionRuleDirect"
DEVICES = [device(16777219 + i, f"PC{i + 1:02d}") for i in range(4)]
PC01, PC02, PC03 = 16777219, 16777220, 16777221
COLLECTIONS = {
    "PS100123": "Project reinstall",
    "PS100124": "Visio reinstall",
    "PS100200": "Pilot devices",
}
BOTH = "CollectionID eq 'PS100123' or CollectionID eq 'PS100124'"


class Api:
    """Calls against one simulator with one session and token."""

    def __init__(self, http: requests.Session, sim: AdminServiceSimulator, token: str) -> None:
        self.http, self.sim, self.token = http, sim, token

    def get(self, path: str, **params: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.http.get(self.sim.cmg_url + path, headers=headers, params=params, timeout=30)

    def values(self, path: str, **params: str) -> list[dict[str, Any]]:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["value"]
        return rows

    def add(self, collection_id: str, resource_id: int) -> requests.Response:
        body = {
            "collectionRule": {
                "@odata.type": DIRECT,
                "ResourceClassName": "SMS_R_System",
                "RuleName": str(resource_id),
                "ResourceID": resource_id,
            }
        }
        path = f"wmi/SMS_Collection('{collection_id}')/AdminService.AddMembershipRule"
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.http.post(self.sim.cmg_url + path, json=body, headers=headers, timeout=30)


@pytest.fixture
def make_api(
    start_simulator: Callable[..., AdminServiceSimulator],
    trusting_session: requests.Session,
    signer: TokenSigner,
) -> Callable[..., Api]:
    token = signer.token(issuer=ISSUER, upn=ADMIN)

    def make(**options: Any) -> Api:
        options.setdefault("devices", DEVICES)
        options.setdefault("collections", COLLECTIONS)
        simulator = start_simulator(issuer=ISSUER, admins=[ADMIN], **options)
        return Api(trusting_session, simulator, token)

    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def assert_odata_error(response: requests.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert fragment.lower() in response.json()["error"]["message"].lower(), response.text


# -- deployments ---------------------------------------------------------------------------


def test_deployments_are_listed_per_collection_with_their_codes(api: Api) -> None:
    app = api.sim.add_deployment("PS100123", "Microsoft Project 64-bit")
    ts = api.sim.add_deployment(
        "PS100123", "Windows 11 upgrade", feature_type=TASK_SEQUENCE, intent=AVAILABLE
    )
    program = api.sim.add_deployment(
        "ps100124", "Visio", feature_type=PROGRAM, intent=REQUIRED, program="Install"
    )
    api.sim.add_deployment("PS100200", "Pilot tools")  # another collection: not asked for
    select = "DeploymentID,CollectionID,SoftwareName,ProgramName,FeatureType,DeploymentIntent"
    rows = api.values("wmi/SMS_DeploymentSummary", **{"$filter": BOTH, "$select": select})
    assert sorted(rows, key=lambda r: r["SoftwareName"]) == [
        {
            "DeploymentID": app,
            "CollectionID": "PS100123",
            "SoftwareName": "Microsoft Project 64-bit",
            "ProgramName": "",
            "FeatureType": APPLICATION,
            "DeploymentIntent": REQUIRED,
        },
        {
            "DeploymentID": program,
            "CollectionID": "PS100124",
            "SoftwareName": "Visio",
            "ProgramName": "Install",
            "FeatureType": PROGRAM,
            "DeploymentIntent": REQUIRED,
        },
        {
            "DeploymentID": ts,
            "CollectionID": "PS100123",
            "SoftwareName": "Windows 11 upgrade",
            "ProgramName": "",
            "FeatureType": TASK_SEQUENCE,
            "DeploymentIntent": AVAILABLE,
        },
    ]
    assert app.startswith("{") and program.startswith("PS1")  # a GUID; an advertisement ID
    (full,) = api.values("wmi/SMS_DeploymentSummary", **{"$filter": f"DeploymentID eq '{ts}'"})
    assert full["CollectionName"] == "Project reinstall" and full["ObjectTypeID"] == 201
    assert {"NumberTargeted", "EnforcementDeadline", "PackageID"} <= full.keys()


def test_deployment_queries_are_strict(api: Api) -> None:
    assert api.values("wmi/SMS_DeploymentSummary") == []
    assert_odata_error(
        api.get("wmi/SMS_DeploymentSummary", **{"$select": "DeploymentID,Purpose"}),
        400,
        "Could not find a property named 'Purpose' on type 'AdminService.SMS_DeploymentSummary'",
    )
    assert_odata_error(
        api.get("wmi/SMS_DeploymentSummary", **{"$filter": "TargetName eq 'x'"}), 400, "TargetName"
    )
    # SMS_DeploymentInfo's properties are not the summary's
    assert_odata_error(
        api.get("wmi/SMS_DeploymentSummary", **{"$select": "DeploymentType"}), 400, "DeploymentType"
    )


# -- maintenance windows -------------------------------------------------------------------


def test_service_windows_come_only_from_the_key_get(api: Api) -> None:
    assert_odata_error(api.get("wmi/SMS_CollectionSettings('PS100123')"), 404, "PS100123")
    assert_odata_error(api.get("wmi/SMS_CollectionSettings('PS199999')"), 404, "PS199999")
    weekend = api.sim.add_service_window("PS100123", "Weekend", description="Sat 22-02")
    api.sim.add_service_window(
        "PS100123", "Patch night", enabled=False, window_type=SOFTWARE_UPDATES
    )

    (settings,) = api.values("wmi/SMS_CollectionSettings('PS100123')")
    assert settings["CollectionID"] == "PS100123"
    first, second = settings["ServiceWindows"]
    assert first["ServiceWindowID"] == weekend
    assert (first["Name"], first["Description"], first["IsEnabled"]) == (
        "Weekend",
        "Sat 22-02",
        True,
    )
    assert (first["ServiceWindowType"], second["ServiceWindowType"]) == (GENERAL, SOFTWARE_UPDATES)
    assert second["IsEnabled"] is False
    assert settings["CollectionVariables"] == [] and settings["PowerConfigs"] == []

    (selected,) = api.values(
        "wmi/SMS_CollectionSettings('PS100123')", **{"$select": "CollectionID,ServiceWindows"}
    )
    assert set(selected) == {"CollectionID", "ServiceWindows"}
    # a query answers no lazy property, and refuses to select one
    (listed,) = api.values("wmi/SMS_CollectionSettings", **{"$filter": BOTH})
    assert listed["CollectionID"] == "PS100123" and "ServiceWindows" not in listed
    assert_odata_error(
        api.get("wmi/SMS_CollectionSettings", **{"$select": "ServiceWindows"}),
        400,
        "ServiceWindows",
    )
    assert_odata_error(
        api.get("wmi/SMS_CollectionSettings('PS100123')", **{"$select": "Windows"}), 400, "Windows"
    )
    assert_odata_error(
        api.get("wmi/SMS_CollectionSettings('PS100123')", **{"$top": "1"}), 400, "$select"
    )
    counts = api.values(
        "wmi/SMS_Collection", **{"$filter": BOTH, "$select": "CollectionID,ServiceWindowsCount"}
    )
    assert counts == [
        {"CollectionID": "PS100123", "ServiceWindowsCount": 2},
        {"CollectionID": "PS100124", "ServiceWindowsCount": 0},
    ]
    assert api.sim.count_calls("SMS_CollectionSettings", collection_id="PS100123") == 5


def test_settings_without_windows_and_other_key_shapes(make_api: Callable[..., Api]) -> None:
    api = make_api(key_get_shape="entity", missing_key="empty")
    api.sim.add_collection_settings("PS100124")
    document = api.get("wmi/SMS_CollectionSettings('PS100124')").json()
    assert document["@odata.context"].endswith("#SMS_CollectionSettings/$entity")
    assert document["ServiceWindows"] == []
    missing = api.get("wmi/SMS_CollectionSettings('PS100123')")
    assert missing.status_code == 200 and missing.json()["value"] == []
    segment = api.get("wmi/SMS_CollectionSettings/PS100124")
    assert segment.status_code == 200 and segment.json()["CollectionID"] == "PS100124"
    assert_odata_error(
        api.get("wmi/SMS_CollectionSettings('PS100124')/AdminService.RequestRefresh"), 404, "No"
    )


# -- the limiting collection ---------------------------------------------------------------


def test_a_device_outside_the_limiting_collection_never_becomes_a_member(api: Api) -> None:
    api.sim.set_direct_members("PS100200", [PC01])
    api.sim.set_limiting_collection("PS100123", "PS100200")
    for resource_id in (PC01, PC02):
        assert api.add("PS100123", resource_id).status_code == 201
    assert api.sim.direct_members("PS100123") == {PC01, PC02}  # both rules are there
    assert api.sim.members("PS100123") == {PC01}  # one member
    membership = api.values(
        "wmi/SMS_FullCollectionMembership", **{"$filter": "CollectionID eq 'PS100123'"}
    )
    assert [row["ResourceID"] for row in membership] == [PC01]

    select = "CollectionID,LimitToCollectionID,LimitToCollectionName,MemberCount"
    rows = api.values(
        "wmi/SMS_Collection",
        **{
            "$filter": "CollectionID eq 'PS100123' or CollectionID eq 'PS100124'",
            "$select": select,
        },
    )
    assert rows == [
        {
            "CollectionID": "PS100123",
            "LimitToCollectionID": "PS100200",
            "LimitToCollectionName": "Pilot devices",
            "MemberCount": 1,
        },
        {
            "CollectionID": "PS100124",
            "LimitToCollectionID": "SMS00001",
            "LimitToCollectionName": "All Systems",
            "MemberCount": 0,
        },
    ]
    # Limited to All Systems again: evaluated at once, every rule's device is a member.
    api.sim.set_limiting_collection("PS100123", "SMS00001")
    assert api.sim.members("PS100123") == {PC01, PC02}


def test_set_direct_members_and_refresh_respect_the_limit(api: Api) -> None:
    api.sim.set_limiting_collection("PS100124", "PS100200")
    api.sim.set_direct_members("PS100124", [PC01, PC02, PC03])
    assert api.sim.members("PS100124") == set()  # the limiting collection is empty
    api.sim.set_direct_members("PS100200", [PC02, PC03])
    assert api.sim.members("PS100124") == set()  # not evaluated again yet
    headers = {"Authorization": f"Bearer {api.token}"}
    path = "wmi/SMS_Collection('PS100124')/AdminService.RequestRefresh"
    refresh = api.http.post(api.sim.cmg_url + path, json={}, headers=headers, timeout=30)
    assert refresh.status_code == 201
    assert api.sim.members("PS100124") == {PC02, PC03}
    with pytest.raises(KeyError):
        api.sim.set_limiting_collection("PS100124", "PS1FFFFF")
    with pytest.raises(ValueError, match="itself"):
        api.sim.set_limiting_collection("PS100124", "ps100124")


def test_collection_default_shape_and_metadata(api: Api) -> None:
    (row,) = api.values("wmi/SMS_Collection", **{"$filter": "CollectionID eq 'PS100123'"})
    assert set(row) == {
        "CollectionID",
        "Name",
        "MemberCount",
        "CollectionType",
        "LimitToCollectionID",
    }
    metadata = api.get("v1.0/$metadata").text
    for fragment in (
        'EntitySet Name="SMS_DeploymentSummary"',
        'EntitySet Name="SMS_CollectionSettings"',
        'ComplexType Name="SMS_ServiceWindow"',
        'Property Name="ServiceWindows" Type="Collection(AdminService.SMS_ServiceWindow)"',
        'Property Name="ServiceWindowsCount"',
    ):
        assert fragment in metadata, fragment
