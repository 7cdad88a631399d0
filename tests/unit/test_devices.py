"""Choosing the discovery record of a machine name, like an experienced admin."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.domain.devices import DeviceRecord, choose, netbios_problem


def record(
    rid, name="PC01", *, client=1, active=1, obsolete=0, decommissioned=0, created=(2026, 1, 1)
):
    return DeviceRecord(
        resource_id=rid,
        name=name,
        netbios_name=name,
        client=client,
        active=active,
        obsolete=obsolete,
        decommissioned=decommissioned,
        creation_date=datetime(*created) if created else None,
    )


def test_single_clean_record():
    result = choose("pc01", [record(16777220)])
    assert (result.kind, result.resource_id) == ("resolved", 16777220)


def test_reimaged_machine_takes_the_active_new_record():
    old = record(16777001, obsolete=1, active=0, created=(2025, 3, 1))
    new = record(16777999, created=(2026, 10, 1))
    result = choose("PC01", [old, new])
    assert (result.kind, result.resource_id) == ("resolved", 16777999)
    assert "chosen among 2 records" in result.reason


def test_null_obsolete_counts_as_not_obsolete():
    assert choose("PC01", [record(5, obsolete=None)]).resource_id == 5


def test_ad_only_record_beside_the_client_record():
    ad_only = record(2000, client=0, active=0, created=(2026, 11, 1))
    client = record(1000, created=(2026, 1, 1))
    assert choose("PC01", [ad_only, client]).resource_id == 1000


@pytest.mark.parametrize(
    "bad",
    [
        {"client": 0},
        {"client": None},
        {"obsolete": 1},
        {"decommissioned": 1},
        {"active": 0},
        {"active": None},
    ],
)
def test_records_that_fail_a_rule_are_never_chosen(bad):
    result = choose("PC01", [record(7, **bad)])
    assert result.kind == "not-found"
    assert "none" in result.reason


def test_newest_record_wins_among_good_ones():
    assert (
        choose(
            "PC01", [record(1, created=(2026, 1, 1)), record(2, created=(2026, 6, 1))]
        ).resource_id
        == 2
    )


def test_a_tie_is_ambiguous_not_a_guess():
    result = choose("PC01", [record(1), record(2)])
    assert result.kind == "ambiguous"
    assert result.resource_id is None
    assert "tie" in result.reason


def test_other_names_are_ignored():
    assert choose("PC01", [record(1, name="PC010")]).kind == "not-found"
    assert choose("PC01", []).kind == "not-found"


@pytest.mark.parametrize("name", ["PC01", "ÑANDÚ-PC", "PC'01", "PC%", "A" * 15, "WS-1_x.y"])
def test_valid_netbios_names(name):
    assert netbios_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A" * 16,
        "' or 1 eq 1",
        "PC 01",
        "PC\\01",
        "PC/01",
        "PC:1",
        "PC*",
        "PC?",
        'PC"',
        "PC<",
        "PC|",
        "PC\n01",
        "PC\x00",
        ".PC01",
    ],
)
def test_invalid_netbios_names(name):
    assert netbios_problem(name) is not None
