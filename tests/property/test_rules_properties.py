"""The rules loader on hostile files: a RuleSet or a ConfigurationError that names the
problem, never another exception; matching compares like the site database does."""

from __future__ import annotations

import json
import string
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.domain.rules import RuleSet, load_rules, parse_rules
from shared.domain.status_messages import StatusMessage
from shared.errors import ConfigurationError
from tests.property.conftest import with_fixtures
from tests.property.strategies import (
    INSERTION_KEYS,
    any_text,
    collection_ids,
    deep,
    hostile_char,
    huge_text,
    json_values,
    rule_names,
    unicode_text,
)

SOURCE = "rules under test"

#: Characters whose upper and lower case are single characters of one case-fold, so a
#: case variant built from them equals the original under a case-insensitive collation.
CASE_ALPHABET = string.ascii_letters + string.digits + "-_.:;!#%&'()[]{}=+*/ ÀÉÑÖØÞàéñöøþ"
ACCENTED = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú", "A": "Á", "E": "É", "N": "Ñ"}

_short_values = st.text(st.sampled_from(CASE_ALPHABET), min_size=1, max_size=20)
match_values = st.one_of(
    _short_values,
    # At the 255-character limit (a short text repeated: cheap to generate).
    st.tuples(_short_values, st.integers(250, 255)).map(lambda t: (t[0] * 255)[: t[1]]),
).filter(lambda s: s.strip() != "")


@st.composite
def valid_rules(draw: st.DrawFn) -> dict[str, Any]:
    """One rule as an operator writes it (collection IDs in any case, padded)."""
    rule: dict[str, Any] = {
        "name": draw(rule_names),
        "match": draw(
            st.dictionaries(st.sampled_from(INSERTION_KEYS), match_values, min_size=1, max_size=3)
        ),
        "collection_id": draw(
            st.tuples(collection_ids, st.sampled_from(["", " ", "\t"]), st.booleans()).map(
                lambda t: t[1] + (t[0].lower() if t[2] else t[0]) + t[1]
            )
        ),
        "action": draw(st.sampled_from(["add", "remove"])),
        "target": draw(st.sampled_from(["adminservice", "webservice"])),
    }
    if draw(st.booleans()):
        rule["description"] = draw(st.one_of(st.none(), any_text))
    return rule


valid_rule_lists = st.lists(
    valid_rules(), min_size=1, max_size=4, unique_by=lambda r: r["name"].casefold()
)

#: Per field, values a rule must not have.
BAD_RULE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(
        st.none(),
        st.integers(),
        st.just(""),
        st.just("x" * 65),
        huge_text(),
        st.tuples(rule_names, hostile_char.filter(lambda c: c not in "._-")).map("".join),
        rule_names.map(lambda s: s + "\n"),
    ),
    "match": st.one_of(
        st.none(),
        st.just({}),
        st.lists(st.integers(), max_size=2),
        any_text,
        st.dictionaries(
            unicode_text.filter(lambda k: k not in INSERTION_KEYS),
            match_values,
            min_size=1,
            max_size=2,
        ),
        st.dictionaries(
            st.sampled_from(INSERTION_KEYS),
            st.one_of(
                st.just(""),
                st.text(" \t\n\u3000", min_size=1, max_size=5),
                st.text(st.sampled_from("ab"), min_size=256, max_size=300),
                st.integers(),
                st.none(),
            ),
            min_size=1,
            max_size=2,
        ),
    ),
    "collection_id": st.one_of(
        st.none(),
        st.integers(),
        st.just(""),
        huge_text(),
        collection_ids.map(lambda s: s[:7]),
        collection_ids.map(lambda s: s + "0"),
        collection_ids.map(lambda s: "SMS" + s[3:]),
        collection_ids.map(lambda s: s[:3] + "G" + s[4:]),
        collection_ids.map(lambda s: s[:4] + "'" + s[5:]),
    ),
    "action": st.one_of(st.none(), st.sampled_from(["ADD", "delete", "", "add "])),
    "target": st.one_of(st.none(), st.sampled_from(["AdminService", "sql", "", "web service"])),
    "description": st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2)),
}


def load_or_refuse(text: str) -> RuleSet | None:
    """The rules, or None when the loader refused them with the typed error."""
    try:
        return parse_rules(text, source=SOURCE)
    except ConfigurationError as error:
        assert str(error).startswith(SOURCE + ": ")  # says which file
        return None


@settings(max_examples=500)
@given(st.one_of(unicode_text, json_values.map(json.dumps)))
def test_arbitrary_documents_load_or_are_refused(text: str) -> None:
    rules = load_or_refuse(text)
    if rules is not None:
        assert rules.rules


@settings(max_examples=50)
@given(st.integers(1, 100_000), st.sampled_from(["array", "object"]), st.booleans())
def test_deep_or_huge_documents_are_refused(depth: int, kind: str, in_a_rule: bool) -> None:
    nested = deep(depth, kind)
    if in_a_rule:
        nested = '{"rules": [{"name": "r", "match": ' + nested + "}]}"
    assert load_or_refuse(nested) is None
    assert load_or_refuse('{"rules": [' + "9" * (4300 + depth % 2000) + "]}") is None


@settings(max_examples=500)
@given(valid_rule_lists, st.data())
def test_a_broken_field_is_named(rules: list[dict[str, Any]], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(rules) - 1))
    field = data.draw(st.sampled_from(sorted(BAD_RULE_VALUES)))
    how = data.draw(st.sampled_from(["value", "missing", "extra"]))
    broken = rules[index]
    if how == "value":
        broken[field] = data.draw(BAD_RULE_VALUES[field])
        named = field
    elif how == "missing":
        assume(field != "description")  # optional
        del broken[field]
        named = field
    else:
        named = data.draw(
            st.text(string.ascii_letters, min_size=1, max_size=10).filter(
                lambda k: k not in BAD_RULE_VALUES
            )
        )
        broken[named] = data.draw(st.integers())
    with pytest.raises(ConfigurationError) as refused:
        parse_rules(json.dumps({"rules": rules}), source=SOURCE)
    message = str(refused.value)
    assert f"rules[{index}]" in message and named in message


@settings(max_examples=200)
@given(valid_rule_lists, st.data())
def test_names_differing_only_in_case_are_refused(
    rules: list[dict[str, Any]], data: st.DataObject
) -> None:
    copy = dict(data.draw(st.sampled_from(rules)))
    copy["name"] = copy["name"].swapcase()
    with pytest.raises(ConfigurationError, match="used more than once"):
        parse_rules(json.dumps({"rules": [*rules, copy]}), source=SOURCE)


@settings(max_examples=300)
@given(valid_rule_lists)
def test_valid_rules_load_and_round_trip(rules: list[dict[str, Any]]) -> None:
    loaded = load_or_refuse(json.dumps({"rules": rules}))
    assert loaded is not None
    assert [r.name for r in loaded.rules] == [r["name"] for r in rules]
    for rule, written in zip(loaded.rules, rules, strict=True):
        assert rule.match == written["match"]  # verbatim: matching does the folding
        assert rule.collection_id == written["collection_id"].strip().upper()
        assert (rule.action, rule.target) == (written["action"], written["target"])
    again = parse_rules(json.dumps(loaded.model_dump(exclude_none=True)), source=SOURCE)
    assert again == loaded


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    return tmp_path / "rules.json"


@with_fixtures(200)
@given(
    st.one_of(
        st.binary(max_size=200),
        valid_rule_lists.map(lambda r: json.dumps({"rules": r}).encode("utf-8")),
        valid_rule_lists.map(lambda r: json.dumps({"rules": r}).encode("utf-16")),
    )
)
def test_a_rules_file_loads_or_is_refused(rules_file: Path, content: bytes) -> None:
    rules_file.write_bytes(content)
    try:
        rules = load_rules(rules_file)
    except ConfigurationError as error:
        assert str(rules_file) in str(error)
        return
    assert rules.rules
    assert content.decode("utf-8")  # only UTF-8 files load


# -- matching ------------------------------------------------------------------------------


def message(strings: dict[str, str], message_id: int = 39997) -> StatusMessage:
    slots = tuple(strings.get(key) for key in INSERTION_KEYS)
    return StatusMessage("PS1", 2**56 + 1, message_id, datetime(2026, 11, 1), "PC01", slots)


@st.composite
def case_variant(draw: st.DrawFn, value: str) -> str:
    """``value`` with each character's case chosen by one bit of a drawn mask."""
    mask = draw(st.integers(0, 2 ** len(value) - 1))
    return "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(value))


@settings(max_examples=400)
@given(valid_rules(), st.data())
def test_matching_ignores_case_and_trailing_spaces_only(
    written: dict[str, Any], data: st.DataObject
) -> None:
    rule = parse_rules(json.dumps({"rules": [written]})).rules[0]
    same: dict[str, str] = {}
    for key, value in written["match"].items():
        spaces = " " * data.draw(st.integers(0, 3))
        same[key] = data.draw(case_variant(value.rstrip(" "))) + spaces
    # Other strings the message carries change nothing.
    for key in INSERTION_KEYS:
        if key not in same and data.draw(st.booleans()):
            same[key] = data.draw(any_text)
    assert rule.matches(message(same))
    assert not rule.matches(message(same, message_id=data.draw(st.sampled_from([39998, 39999, 0]))))

    key = data.draw(st.sampled_from(sorted(written["match"])))
    variant = same[key].rstrip(" ")
    different = [
        variant + data.draw(st.sampled_from(["x", "\t", "\u00a0", "\u3000", "0", "'"])),
        " " + variant,
        variant[:-1],
    ]
    vowels = [i for i, c in enumerate(variant) if c in ACCENTED]
    if vowels:
        i = data.draw(st.sampled_from(vowels))
        different.append(variant[:i] + ACCENTED[variant[i]] + variant[i + 1 :])  # accent-sensitive
    for changed in different:
        assert not rule.matches(message({**same, key: changed})), changed
    missing = {k: v for k, v in same.items() if k != key}
    assert not rule.matches(message(missing))
