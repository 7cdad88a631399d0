"""Rules: validation of the rules file and matching like SQL Server compares."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from shared.domain.rules import load_rules, parse_rules
from shared.domain.status_messages import StatusMessage
from shared.errors import ConfigurationError
from tests.helpers import rule, rules_text

REPO = Path(__file__).resolve().parents[2]


def message(*strings, message_id=39997):
    padded = tuple(strings) + (None,) * (10 - len(strings))
    return StatusMessage("PS1", 2**56 + 1, message_id, datetime(2026, 11, 1), "PC01", padded)


def test_shipped_rules_file_holds_the_m365_scenario():
    rules = load_rules(REPO / "rules.json")
    assert [r.name for r in rules.rules] == [
        "project-64bit-reinstall",
        "visio-64bit-reinstall",
        "outlook-room-plugin-reinstall",
    ]
    assert [r.collection_id for r in rules.rules] == ["PS100123", "PS100124", "PS100125"]
    assert {r.match["InsertionString2"] for r in rules.rules} == {
        "projectInstalled",
        "visioInstalled",
        "roomPluginInstalled",
    }
    assert all(r.action == "add" and r.target == "adminservice" for r in rules.rules)


@pytest.mark.parametrize(
    ("strings", "matches"),
    [
        (("MsgType_Office365Upgrade", "projectInstalled"), True),
        (("msgtype_office365upgrade", "PROJECTINSTALLED"), True),  # case-insensitive
        (("MsgType_Office365Upgrade", "projectInstalled   "), True),  # trailing spaces, like SQL =
        (("MsgType_Office365Upgrade", "projectInstalled", "extra"), True),  # other strings free
        (("MsgType_Office365Upgrade", " projectInstalled"), False),  # leading space matters
        (("MsgType_Office365Upgrade", "projectInstalledX"), False),
        (("MsgType_Office365Upgrade",), False),  # missing string never matches
        (("projectInstalled", "MsgType_Office365Upgrade"), False),  # wrong position
        (("MsgType_Office365Upgrade", "projéctInstalled"), False),  # accent-sensitive
    ],
)
def test_matching(strings, matches):
    rules = parse_rules(rules_text(rule()))
    assert rules.rules[0].matches(message(*strings)) is matches


@pytest.mark.parametrize("message_id", [39998, 39999, 10002])
def test_only_39997_messages_match(message_id):
    rules = parse_rules(rules_text(rule()))
    assert (
        rules.matching(
            message("MsgType_Office365Upgrade", "projectInstalled", message_id=message_id)
        )
        == []
    )


def test_a_message_may_match_several_rules():
    rules = parse_rules(
        rules_text(
            rule(),
            rule(
                name="audit-all-upgrades",
                match={"InsertionString1": "MsgType_Office365Upgrade"},
                collection_id="PS1000AF",
            ),
        )
    )
    matched = rules.matching(message("MsgType_Office365Upgrade", "projectInstalled"))
    assert [r.name for r in matched] == ["project-64bit-reinstall", "audit-all-upgrades"]


def test_collection_id_is_normalised_to_upper_case():
    rules = parse_rules(rules_text(rule(collection_id="ps1000af")))
    assert rules.rules[0].collection_id == "PS1000AF"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"collection_id": "SMS00001"},
            "rules[0] ('project-64bit-reinstall').collection_id: 'SMS00001' is a built-in collection",
        ),
        ({"collection_id": "PS1-0123"}, "is not a ConfigMgr collection ID"),
        ({"collection_id": "PS10012G"}, "is not a ConfigMgr collection ID"),
        ({"action": "delete"}, "action: Input should be 'add' or 'remove'"),
        ({"target": "ldap"}, "target: Input should be 'adminservice' or 'webservice'"),
        ({"match": {}}, "match: Dictionary should have at least 1 item"),
        ({"match": {"InsertionString11": "x"}}, "InsertionString11"),
        ({"match": {"InsertionString1": "   "}}, "InsertionString1 is blank"),
        ({"match": {"InsertionString1": "x" * 256}}, "at most 255 characters"),
        ({"name": "has spaces"}, "name: String should match pattern"),
        ({"unexpected": True}, "unexpected: Extra inputs are not permitted"),
    ],
)
def test_invalid_rule_is_named(overrides, expected):
    with pytest.raises(ConfigurationError) as caught:
        parse_rules(rules_text(rule(**overrides)))
    assert expected in str(caught.value)


def test_eleven_match_keys_are_too_many():
    match = {f"InsertionString{n}": "x" for n in range(1, 11)}
    parse_rules(rules_text(rule(match=match)))  # ten is the maximum and fine
    with pytest.raises(ConfigurationError):
        parse_rules(json.dumps({"rules": [rule(match={**match, "InsertionString0": "x"})]}))


def test_duplicate_rule_names_are_refused():
    with pytest.raises(
        ConfigurationError, match=r"rule name 'Project-64bit-Reinstall' is used more than once"
    ):
        parse_rules(
            rules_text(rule(), rule(name="Project-64bit-Reinstall", collection_id="PS100124"))
        )


def test_empty_rules_and_bad_json_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="at least 1 item"):
        parse_rules('{"rules": []}')
    path = tmp_path / "rules.json"
    path.write_text('{"rules": [')
    with pytest.raises(
        ConfigurationError, match=r"REMEDIATION_RULES_FILE .*rules.json: not valid JSON \(line 1"
    ):
        load_rules(path)
    with pytest.raises(
        ConfigurationError, match=r"REMEDIATION_RULES_FILE: .*missing\.json not found"
    ):
        load_rules(tmp_path / "missing.json")
