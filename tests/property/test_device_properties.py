"""Device identity on hostile names: the NetBIOS rule against an oracle written from
the documented rule, discovery flags, and a choice that never picks another name."""

from __future__ import annotations

import string
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.devices import DeviceRecord, choose, flag, netbios_problem
from tests.property.oracles import FORBIDDEN, WHITE_SPACE, is_netbios_name
from tests.property.strategies import any_text, hostile_char, lone_surrogate, netbios_names

other_char = st.one_of(
    hostile_char,
    st.sampled_from(sorted(WHITE_SPACE | FORBIDDEN)),
    st.characters(categories=["Cc", "Cf", "Co", "Cn"]),
    lone_surrogate,
    st.characters(),
)
candidate_names = st.one_of(
    netbios_names,
    # A valid name with one hostile character somewhere.
    st.tuples(netbios_names, other_char, st.integers(0, 15)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    ),
    netbios_names.map(lambda s: "." + s[:14]),
    st.text(st.sampled_from(string.ascii_letters + string.digits + "-"), min_size=14, max_size=17),
    st.text(st.one_of(other_char, st.sampled_from(string.ascii_letters)), max_size=20),
)


@settings(max_examples=2000)
@given(candidate_names)
def test_netbios_rule_matches_the_documented_rule(name: str) -> None:
    problem = netbios_problem(name)
    assert (problem is None) == is_netbios_name(name), problem
    if problem is not None:
        assert problem.startswith("the machine name ")  # the reason an operator reads


@settings(max_examples=500)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        any_text,
        # Other scripts' digits, superscripts, separators.
        st.text(
            st.sampled_from("0123456789 \t\u00b2\u00b3\u0663\u06f4\u07c1\u0966\u0be7\u00a0-+_"),
            max_size=6,
        ),
        st.floats(),
    )
)
def test_a_discovery_flag_is_read_or_is_null(value: object) -> None:
    result = flag(value)
    assert result is None or type(result) is int
    if isinstance(value, bool | int):
        assert result == int(value)
    elif (
        isinstance(value, str)
        and value.strip(" \t")
        and set(value.strip(" \t")) <= set(string.digits)
    ):
        assert result == int(value.strip(" \t"))


NAMES = [
    "PC01",
    "pc01",
    "PC01 ",
    "PC0l",
    "PC-01",
    "ÑANDÚ-PC",
    "ñandú-pc",
    "NANDU-PC",
    "PC%",
    "PC_1",
]
records = st.builds(
    DeviceRecord,
    resource_id=st.integers(1, 2**31 - 1),
    name=st.one_of(st.none(), st.sampled_from(NAMES)),
    netbios_name=st.one_of(st.none(), st.sampled_from(NAMES)),
    client=st.sampled_from([None, 0, 1]),
    active=st.sampled_from([None, 0, 1]),
    obsolete=st.sampled_from([None, 0, 1]),
    decommissioned=st.sampled_from([None, 0, 1]),
    creation_date=st.one_of(
        st.none(), st.datetimes(datetime(2020, 1, 1), datetime(2020, 1, 3)).map(
            lambda d: d.replace(minute=0, second=0, microsecond=0)
        )
    ),
)  # fmt: skip


@settings(max_examples=500)
@given(st.sampled_from(NAMES), st.lists(records, max_size=6, unique_by=lambda r: r.resource_id))
def test_choice_never_picks_another_name(machine_name: str, found: list[DeviceRecord]) -> None:
    resolution = choose(machine_name, found)
    # Only records of the very name (case-insensitively) count, whatever the source sent.
    named = [r for r in found if (r.netbios_name or r.name or "").lower() == machine_name.lower()]
    assert resolution.named_records in (0, len(named))
    if resolution.kind != "resolved":
        assert resolution.resource_id is None
        return
    chosen = next(r for r in named if r.resource_id == resolution.resource_id)
    assert (chosen.client, chosen.active) == (1, 1)
    assert chosen.obsolete != 1 and chosen.decommissioned != 1
    # No other usable record of the name is as new: a tie is "ambiguous", never a guess.
    usable = [
        r
        for r in named
        if (r.client, r.active) == (1, 1) and r.obsolete != 1 and r.decommissioned != 1
    ]
    newest = max(r.creation_date or datetime.min for r in usable)
    assert [r.resource_id for r in usable if (r.creation_date or datetime.min) == newest] == [
        chosen.resource_id
    ]
