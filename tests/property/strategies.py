"""Hypothesis strategies for hostile and valid inputs, shared by the property tests."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

INSERTION_KEYS = tuple(f"InsertionString{n}" for n in range(1, 11))

#: Characters that break naive escaping in SQL, OData, URLs, JSON, logs and table keys.
HOSTILE_CHARS = (
    "'\"%&#+/\\?*_[]<>|:;=(),.~`!@$^{}- "
    "\x00\x01\t\n\r\x0b\x0c\x1b\x7f\x85"
    "\u00a0\u00ad\u200b\u200d\u202e\u2028\u2029\ufeff\ufffd\uffff"
    "ßÑñŞİıǰﬁＰ\u0301\u034f\ufe0f"
    "\U0001f4bb\U000e0041"
)

hostile_char = st.sampled_from(HOSTILE_CHARS)
#: Any code point a UTF-8 document can carry (no surrogates), hostile ones often.
any_char = st.one_of(hostile_char, st.characters(codec="utf-8"))
lone_surrogate = st.characters(categories=["Cs"])

#: Text that UTF-8 can carry.
any_text = st.text(any_char, max_size=40)
#: Also lone surrogates: what a JSON ``\ud800`` escape or a UTF-16 source can hold.
unicode_text = st.text(st.one_of(any_char, lone_surrogate), max_size=40)


@st.composite
def huge_text(draw: st.DrawFn) -> str:
    """A long run of one character (up to the queue's 48 KiB)."""
    return draw(any_char) * draw(st.integers(256, 40_000))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 5, max_value=2**70),
    st.floats(),  # NaN and Infinity too: Python's json writes and reads them
    unicode_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(unicode_text, inner, max_size=5)
    ),
    max_leaves=20,
)


class Raw(str):
    """JSON text to put in a document as it is (what json.dumps cannot write)."""


def dumps(document: Any, *, ensure_ascii: bool = True) -> str:
    """``json.dumps``, with every Raw value spliced in verbatim."""
    raws: list[Raw] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {key: mark(item) for key, item in value.items()}
        if isinstance(value, list):
            return [mark(item) for item in value]
        return value

    text = json.dumps(mark(document), ensure_ascii=ensure_ascii)
    for index, raw in enumerate(raws):
        text = text.replace(f'"@@raw{index}@@"', raw, 1)
    return text


def deep(depth: int, kind: str) -> str:
    """JSON nested ``depth`` levels (arrays or objects)."""
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# -- the queue message ----------------------------------------------------------------------

#: Times a status message can really carry (SQL Server datetime, milliseconds).
realistic_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
#: Any time the contract allows (SQL Server datetime's range, microseconds).
contract_times = st.one_of(
    realistic_times,
    st.datetimes(min_value=datetime(1753, 1, 1), timezones=st.just(UTC)),
    st.sampled_from([datetime(1753, 1, 1), datetime.max]).map(lambda d: d.replace(tzinfo=UTC)),
)
_ALNUM = string.ascii_letters + string.digits
site_codes = st.text(st.sampled_from(_ALNUM), min_size=3, max_size=3)
#: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`` (built by hand: from_regex is slow).
rule_names = st.builds(
    str.__add__, st.sampled_from(_ALNUM), st.text(st.sampled_from(_ALNUM + "._-"), max_size=63)
)
collection_ids = st.builds(
    lambda site, number: site + number,
    st.text(string.ascii_uppercase + string.digits, min_size=3, max_size=3).filter(
        lambda s: not s.startswith("SMS")
    ),
    st.text("0123456789ABCDEF", min_size=5, max_size=5),
)


@st.composite
def valid_documents(draw: st.DrawFn, *, record_id: int | None = None) -> dict[str, Any]:
    """A queue message as the exporter writes it, with untrusted fields untrusted."""
    strings = draw(
        st.dictionaries(st.sampled_from(INSERTION_KEYS), st.one_of(any_text, huge_text()),
                        max_size=10)
    )  # fmt: skip
    return {
        "schema_version": 1,
        "site_code": draw(site_codes),
        "record_id": record_id if record_id is not None else draw(st.integers(1, 2**63 - 1)),
        "message_id": draw(st.sampled_from([39997, 39998, 39999, 0, -1, 2**31 - 1])),
        "time_utc": _iso(draw(contract_times)),
        "machine_name": draw(st.one_of(any_text, huge_text())),
        "insertion_strings": strings,
        "rule": draw(rule_names),
        "collection_id": draw(collection_ids),
        "action": draw(st.sampled_from(["add", "remove"])),
        "target": draw(st.sampled_from(["adminservice", "webservice"])),
        "exported_utc": _iso(draw(contract_times)),
    }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


#: Values that are not what the contract allows, per field (JSON-ready).
_NOT_A_STRING = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3), st.dictionaries(any_text, st.integers(), max_size=2),
)  # fmt: skip
_NOT_AN_INTEGER = st.one_of(
    st.none(),
    st.floats(allow_nan=False).filter(lambda f: not f.is_integer()),
    st.just(float("nan")),
    st.just(float("inf")),
    st.text(string.ascii_letters, min_size=1, max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(any_text, st.integers(), max_size=2),
)
_BAD_TIMES = st.one_of(
    _NOT_A_STRING.filter(lambda v: not isinstance(v, int | float)),
    any_text.filter(lambda s: not any(c.isdigit() for c in s)),  # no timestamp either
    st.sampled_from(
        [
            "2026-02-30T00:00:00Z",
            "2026-11-02T25:00:00Z",
            "2026-11-02T09:30:00",  # no zone
            "2026-11-02",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00Z",
            "1600-12-31T23:59:59Z",
            "1752-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59-01:00",
            "+275760-09-13T00:00:00Z",
            "2026-11-02T09:30:00+24:00",
            "2026-11-02T09:30:00Z\n",
        ]
    ),
)
BAD_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "schema_version": st.one_of(
        st.none(),
        st.just(0),
        st.just(2),
        st.just(-1),
        st.just("1"),
        st.just(1.5),
        st.integers(min_value=2),
        st.text(max_size=3000),
        st.lists(st.integers(), max_size=2),
    ),
    "site_code": st.one_of(
        _NOT_A_STRING,
        any_text.filter(lambda s: not (len(s) == 3 and s.isascii() and s.isalnum())),
        site_codes.map(lambda s: s + "\n"),
    ),
    "record_id": st.one_of(
        _NOT_AN_INTEGER,
        st.integers(max_value=0),
        st.integers(min_value=2**63, max_value=2**200),
        st.integers(4300, 6000).map(lambda n: Raw("9" * n)),  # past Python's digit limit
    ),
    "message_id": _NOT_AN_INTEGER,
    "time_utc": _BAD_TIMES,
    "exported_utc": _BAD_TIMES,
    "machine_name": st.one_of(
        _NOT_A_STRING,
        st.text(st.one_of(any_char, lone_surrogate)).filter(
            lambda s: any(0xD800 <= ord(c) <= 0xDFFF for c in s)
        ),
    ),
    "insertion_strings": st.one_of(
        _NOT_A_STRING.filter(lambda v: not isinstance(v, dict)),
        st.dictionaries(
            any_text.filter(lambda k: k not in INSERTION_KEYS), any_text, min_size=1, max_size=3
        ),
        st.dictionaries(st.sampled_from(INSERTION_KEYS), _NOT_A_STRING, min_size=1, max_size=3),
        st.dictionaries(
            st.sampled_from(INSERTION_KEYS),
            st.text(lone_surrogate, min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        ),
    ),
    "rule": st.one_of(
        _NOT_A_STRING,
        st.just(""),
        st.just("a" * 65),
        rule_names.map(lambda s: s + "\n"),
        st.tuples(rule_names, hostile_char.filter(lambda c: c not in "._-")).map("".join),
    ),
    "collection_id": st.one_of(
        _NOT_A_STRING,
        st.just(""),
        huge_text(),
        collection_ids.filter(lambda s: s != s.lower()).map(str.lower),
        collection_ids.map(lambda s: s + "'"),
        collection_ids.map(lambda s: s + "\n"),
    ),
    "action": st.one_of(_NOT_A_STRING, st.sampled_from(["ADD", "delete", "", "add "])),
    "target": st.one_of(_NOT_A_STRING, st.sampled_from(["AdminService", "sql", "", "webservice "])),
}
FIELDS = tuple(BAD_FIELD_VALUES)


@st.composite
def contract_violations(draw: st.DrawFn, *, record_id: int | None = None) -> str:
    """A message that breaks the contract in at least one way the contract names."""
    document: dict[str, Any] = draw(valid_documents(record_id=record_id))
    how = draw(st.sampled_from(["value", "missing", "extra", "not-object"]))
    if how == "value":
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
            document[name] = draw(BAD_FIELD_VALUES[name])
    elif how == "missing":
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
            del document[name]
    elif how == "extra":
        for name in draw(
            st.lists(unicode_text.filter(lambda k: k not in FIELDS), min_size=1, max_size=3)
        ):
            document[name] = draw(json_scalars)
    else:
        return json.dumps(draw(st.lists(json_scalars, max_size=3)))
    return dumps(document, ensure_ascii=draw(st.booleans()))


# -- NetBIOS names ------------------------------------------------------------------------

#: Printable ASCII a NetBIOS name may hold (every one but \ / : * ? " < > | and space).
NETBIOS_ASCII = "".join(c for c in string.printable if c not in '\\/:*?"<>|' and not c.isspace())
netbios_names = st.text(
    st.one_of(st.sampled_from(NETBIOS_ASCII), st.sampled_from("ÑÁÉÍÓÚÜñáéíóúüßİıŞ")),
    min_size=1,
    max_size=15,
).filter(lambda s: not s.startswith("."))
