"""The workload generator: deterministic, the promised mix, and sound ground truth.

The ground truth in the workload is set by construction. These tests hold it against
small reference implementations of the stated semantics written here, and (marked
``stack``) against the PostgreSQL stand-in itself.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from devstack.datagen import (
    DEFAULT_START,
    DEVICE_SCENARIOS,
    GENERIC_INFO,
    HOSTILE_MACHINE_NAMES,
    M365_RULES,
    MATCHING_KINDS,
    NON_MATCHING_KINDS,
    WORKLOAD_MIX,
    GeneratedDevice,
    GeneratedStatusMessage,
    Workload,
    generate_workload,
    m365_demo_scenario,
)
from shared.domain.rules import load_rules, parse_rules

RULE_NAMES = {rule["name"] for rule in M365_RULES}


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate_workload(seed=20241104)


# -- reference semantics (independent of the generator) ----------------------------------


def sql_equal(a: str, b: str) -> bool:
    """SQL Server `=` under a _CI_AS collation, for the strings the generator uses."""
    return a.rstrip(" ").casefold() == b.rstrip(" ").casefold()


def reference_rules(message: GeneratedStatusMessage) -> frozenset[str]:
    if message.message_id != GENERIC_INFO:
        return frozenset()
    matched = set()
    for rule in M365_RULES:
        ok = True
        for key, expected in rule["match"].items():
            actual = message.insertion_string(int(key.removeprefix("InsertionString")))
            if actual is None or not sql_equal(actual, expected):
                ok = False
        if ok:
            matched.add(rule["name"])
    return frozenset(matched)


def reference_pick(records: list[GeneratedDevice]) -> int | str:
    candidates = [
        r for r in records
        if r.client == 1 and (r.obsolete or 0) != 1 and r.decommissioned != 1 and r.active == 1
    ]  # fmt: skip
    if not candidates:
        return "unknown-device"
    newest = max(r.creation_date for r in candidates)
    top = [r for r in candidates if r.creation_date == newest]
    return top[0].resource_id if len(top) == 1 else "ambiguous"


def records_by_name(devices: tuple[GeneratedDevice, ...]) -> dict[str, list[GeneratedDevice]]:
    grouped: dict[str, list[GeneratedDevice]] = {}
    for d in devices:
        grouped.setdefault(d.netbios_name.upper(), []).append(d)
    return grouped


# -- determinism and mix ----------------------------------------------------------------------


def test_deterministic_for_a_seed(workload: Workload) -> None:
    again = generate_workload(seed=20241104)
    assert again == workload
    other = generate_workload(seed=20241105)
    assert other.messages != workload.messages
    assert other.kind_counts() == workload.kind_counts()  # same mix, other data


def test_kind_counts_follow_the_mix(workload: Workload) -> None:
    counts = workload.kind_counts()
    print("\nkinds:", dict(sorted(counts.items())))
    assert len(workload.messages) == 10_000
    assert set(counts) == set(WORKLOAD_MIX) == set(MATCHING_KINDS) | set(NON_MATCHING_KINDS)
    for kind, share in WORKLOAD_MIX.items():
        if kind != "other-message":
            assert counts[kind] == int(share * 10_000), kind
    assert abs(sum(WORKLOAD_MIX.values()) - 1.0) < 1e-9
    ratio = len(workload.matching_messages()) / len(workload.messages)
    assert 0.4 <= ratio <= 0.6


def test_small_workloads_still_have_every_kind() -> None:
    small = generate_workload(seed=1, message_count=200, devices_per_site=30)
    assert len(small.messages) == 200
    assert set(small.kind_counts()) == set(WORKLOAD_MIX)
    assert generate_workload(seed=1, message_count=0).messages == ()


def test_sites_are_validated() -> None:
    with pytest.raises(ValueError):
        generate_workload(seed=1, sites=("PS1", "ps1"))
    with pytest.raises(ValueError):
        generate_workload(seed=1, sites=("TOOLONG",))
    one = generate_workload(seed=1, sites=("CAS",), message_count=500, devices_per_site=40)
    assert {m.site_code for m in one.messages} == {"CAS"}


# -- ground truth ----------------------------------------------------------------------------------


def test_expected_rules_agree_with_the_stated_semantics(workload: Workload) -> None:
    for message in workload.messages:
        assert message.expected_rules == reference_rules(message), message


def test_ground_truth_sanity(workload: Workload) -> None:
    for message in workload.messages:
        assert message.expected_rules <= RULE_NAMES
        assert len(message.expected_rules) <= 1
        if message.message_id != GENERIC_INFO:
            assert not message.expected_rules, message
        assert bool(message.expected_rules) == (message.kind in MATCHING_KINDS), message
    by_rule = Counter(name for m in workload.messages for name in m.expected_rules)
    assert set(by_rule) == RULE_NAMES
    assert min(by_rule.values()) > 1000


def test_warnings_and_errors_carry_matching_strings_but_no_rules(workload: Workload) -> None:
    for kind, message_id, severity in (
        ("warning-39998", 39998, -2147483648),
        ("error-39999", 39999, -1073741824),
    ):
        batch = [m for m in workload.messages if m.kind == kind]
        assert batch and all(m.message_id == message_id for m in batch)
        assert all(m.severity == severity and not m.expected_rules for m in batch)
        as_info = [GeneratedStatusMessage(m.site_code, m.machine_name, m.time_utc,
                                          insertion_strings=m.insertion_strings) for m in batch]  # fmt: skip
        assert all(reference_rules(m) for m in as_info)  # same strings as a 39997 would match


def test_variants_that_still_match(workload: Workload) -> None:
    canonical = {
        (r["match"]["InsertionString1"], r["match"]["InsertionString2"]) for r in M365_RULES
    }
    case = [m for m in workload.messages if m.kind == "match-case"]
    assert all(tuple(m.insertion_strings[:2]) not in canonical for m in case)
    spaced = [m for m in workload.messages if m.kind == "match-trailing-space"]
    assert all(any((s or "").endswith(" ") for s in m.insertion_strings[:2]) for m in spaced)
    assert any(len(m.insertion_strings[1] or "") == 255 for m in spaced)


def test_non_matching_variants_are_present(workload: Workload) -> None:
    strings = [m.insertion_strings for m in workload.messages if m.message_id == GENERIC_INFO]
    second = {s[1] for s in strings if len(s) > 1}
    assert "projectInstalledX" in second
    assert " projectInstalled" in second or " visioInstalled" in second
    assert any(s[:1] == ("MsgType_Office365Upgrade",) and len(s) == 1 for s in strings)
    assert any(len(s) >= 3 and s[0] is None and s[1] == "MsgType_Office365Upgrade" for s in strings)
    assert () in strings
    others = {m.message_id for m in workload.messages if m.kind == "other-message"}
    assert {10002, 11170} <= others


def test_repeats_resend_an_earlier_fact(workload: Workload) -> None:
    seen: set[tuple[str, tuple[str | None, ...]]] = set()
    repeats = 0
    for message in workload.messages:
        key = (message.machine_name, message.insertion_strings)
        if message.kind == "repeat":
            repeats += 1
            assert key in seen
        seen.add(key)
    assert repeats == 600


def test_hostile_strings_are_in_the_mix(workload: Workload) -> None:
    texts = [s for m in workload.messages for s in m.insertion_strings if s is not None]
    texts += [m.machine_name for m in workload.messages]
    blob = "\x1f".join(texts)
    for needle in ("'", "' or 1=1 --", "%", ";DROP TABLE", "\n", "\t", "Ñandú-PC", "ПК-ОФИС", "🎉"):
        assert needle in blob, needle
    assert any(len(t) == 255 for t in texts)
    assert all(len(t) <= 255 for t in texts)
    assert "\x00" not in blob
    assert {m.machine_name for m in workload.messages} >= set(HOSTILE_MACHINE_NAMES)
    json.dumps(texts)  # everything is valid Unicode text


def test_times_follow_arrival_order_mostly(workload: Workload) -> None:
    end = DEFAULT_START + timedelta(days=2)
    for site in workload.sites:
        times = [m.time_utc for m in workload.messages if m.site_code == site]
        inversions = sum(1 for a, b in pairwise(times) if b < a)
        print(f"\n{site}: {inversions} of {len(times)} consecutive pairs out of time order")
        assert 0 < inversions < len(times) * 0.12
        assert all(DEFAULT_START - timedelta(hours=13) <= t < end for t in times)
        assert all(t.tzinfo is None and t.microsecond % 10_000 == 0 for t in times)


def test_expected_resolution_agrees_with_the_pick_rule(workload: Workload) -> None:
    grouped = records_by_name(workload.devices)
    names = {m.machine_name.upper() for m in workload.messages} | set(grouped)
    assert set(workload.expected_resolution) == names
    for name, expected in workload.expected_resolution.items():
        assert reference_pick(grouped.get(name, [])) == expected, (name, grouped.get(name))
    outcome = Counter(
        v if isinstance(v, str) else "resolved" for v in workload.expected_resolution.values()
    )
    assert outcome["ambiguous"] == 2 * 2  # 'tie' and 'tie-after-filter' per site
    assert outcome["unknown-device"] >= 6


def test_every_device_scenario_is_present_and_sends(workload: Workload) -> None:
    senders = {m.machine_name.upper() for m in workload.matching_messages()}
    scenarios = Counter(workload.machine_scenarios[name] for name in senders)
    for scenario in (*DEVICE_SCENARIOS, "unknown", "clean"):
        assert scenarios[scenario] >= 1, scenario
    # Records that need a second look are really there.
    devices = workload.devices
    assert any(d.obsolete is None for d in devices)
    assert any(d.client == 0 and d.sms_unique_identifier is None for d in devices)
    assert any(d.decommissioned == 1 for d in devices)
    assert any(
        d.netbios_name != d.netbios_name.upper() and d.netbios_name.isascii() for d in devices
    )
    assert len({d.resource_id for d in devices}) == len(devices)
    lower_senders = [m for m in workload.messages if m.machine_name != m.machine_name.upper()
                     and m.machine_name.isascii()]  # fmt: skip
    assert lower_senders


def test_m365_rules_are_the_shipped_rules_file() -> None:
    """The generator labels ground truth with the rules the repository ships."""
    shipped = load_rules(Path(__file__).resolve().parents[2] / "rules.json")
    parsed = parse_rules(json.dumps({"rules": M365_RULES}))
    assert [(r.name, r.match, r.collection_id, r.action, r.target) for r in parsed.rules] == [
        (r.name, r.match, r.collection_id, r.action, r.target) for r in shipped.rules
    ]


def test_demo_scenario() -> None:
    demo = m365_demo_scenario()
    assert demo == m365_demo_scenario()
    machines = records_by_name(demo.devices)
    assert 45 <= len(machines) <= 55
    assert 50 <= len(demo.messages) <= 70
    assert {m.site_code for m in demo.messages} == {"PS1", "PS2"}
    assert {name for m in demo.messages for name in m.expected_rules} == RULE_NAMES
    assert any(len(records) > 1 for records in machines.values())
    outcomes = Counter(
        v if isinstance(v, str) else "resolved" for v in demo.expected_resolution.values()
    )
    assert outcomes["unknown-device"] == 1 and outcomes["ambiguous"] == 1
    assert demo.kind_counts()["hostile"] == 1
    for message in demo.messages:
        assert message.expected_rules == reference_rules(message)
    for name, expected in demo.expected_resolution.items():
        assert reference_pick(machines.get(name, [])) == expected


# -- through the stand-in ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def db() -> Iterator[object]:
    sitedb = pytest.importorskip("devstack.sitedb")
    with sitedb.SiteDatabase() as database:
        yield database


@pytest.mark.stack
def test_workload_loads_fast_and_the_database_agrees(db, workload: Workload) -> None:
    db.reset()
    db.register_sites(workload.sites)
    db.insert_devices(workload.devices)
    began = time.perf_counter()
    ids = db.insert_status_messages(workload.messages)
    elapsed = time.perf_counter() - began
    strings = sum(1 for m in workload.messages for s in m.insertion_strings if s is not None)
    print(
        f"\ninserted {len(ids)} status messages with {strings} insertion strings in {elapsed:.2f}s"
    )
    assert len(ids) == len(set(ids)) == 10_000
    for index, site in enumerate(workload.sites):
        site_ids = [i for i, m in zip(ids, workload.messages, strict=True) if m.site_code == site]
        assert site_ids == sorted(site_ids)
        assert site_ids[0] == (index + 1) * 2**56

    by_id = dict(zip(ids, workload.messages, strict=True))
    with db.connect_reader() as reader:
        # Rule matching with SQL `=` in the stand-in gives exactly the ground truth.
        for rule in M365_RULES:
            rows = reader.execute(
                "SELECT m.RecordID FROM v_StatusMessage m "
                "INNER JOIN v_StatMsgInsStrings s1 ON s1.RecordID = m.RecordID AND s1.InsStrIndex = 0 "
                "INNER JOIN v_StatMsgInsStrings s2 ON s2.RecordID = m.RecordID AND s2.InsStrIndex = 1 "
                "WHERE m.MessageID = ? AND s1.InsStrValue = ? AND s2.InsStrValue = ?",
                GENERIC_INFO, rule["match"]["InsertionString1"], rule["match"]["InsertionString2"],
            ).fetchall()  # fmt: skip
            got = {r[0] for r in rows}
            want = {i for i, m in by_id.items() if rule["name"] in m.expected_rules}
            assert got == want, rule["name"]

        # Every string round-trips verbatim.
        rows = reader.execute(
            "SELECT RecordID, InsStrIndex, InsStrValue FROM v_StatMsgInsStrings"
        ).fetchall()
        stored: dict[int, dict[int, str]] = {}
        for record_id, index, value in rows:
            stored.setdefault(record_id, {})[index] = value
        for record_id, message in by_id.items():
            expected = {i: s for i, s in enumerate(message.insertion_strings) if s is not None}
            assert stored.get(record_id, {}) == expected

        # Case-insensitive name lookup in v_R_System gives the expected resolution.
        cursor = reader.cursor()
        for name in sorted({m.machine_name for m in workload.messages}):
            records = cursor.execute(
                "SELECT ResourceID, Client0, Active0, Obsolete0, Decommissioned0, Creation_Date0 "
                "FROM v_R_System WHERE Netbios_Name0 = ?",
                name,
            ).fetchall()
            picked = reference_pick([
                GeneratedDevice(r[0], name, name, None, None, None, r[1], r[2], r[3], r[4], r[5])
                for r in records
            ])  # fmt: skip
            assert picked == workload.expected_resolution[name.upper()], name


@pytest.mark.stack
def test_demo_loads(db) -> None:
    db.reset()
    demo = m365_demo_scenario()
    ids = db.load_workload(demo)
    assert len(ids) == len(demo.messages)
    assert db.count("v_R_System") == len(demo.devices)
    assert isinstance(demo.messages[0].time_utc, datetime)
