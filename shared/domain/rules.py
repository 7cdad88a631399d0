"""Remediation rules: which status messages lead to which collection change."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.domain.status_messages import (
    GENERIC_INFO,
    INSERTION_STRING_COUNT,
    INSERTION_STRING_KEYS,
    INSERTION_STRING_MAX_LENGTH,
    StatusMessage,
    sql_equal,
)
from shared.errors import ConfigurationError

#: Site code (3 letters or digits) + 5 hex digits, e.g. PS100123.
_COLLECTION_ID_PATTERN = r"^[A-Z0-9]{3}[0-9A-F]{5}$"
_COLLECTION_ID = re.compile(_COLLECTION_ID_PATTERN)

Action = Literal["add", "remove"]
Target = Literal["adminservice", "webservice"]
RuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
InsertionStringKey = Literal[
    "InsertionString1",
    "InsertionString2",
    "InsertionString3",
    "InsertionString4",
    "InsertionString5",
    "InsertionString6",
    "InsertionString7",
    "InsertionString8",
    "InsertionString9",
    "InsertionString10",
]
#: A collection ID as a rule holds it (upper case), and as queue messages carry it.
CollectionId = Annotated[str, StringConstraints(pattern=_COLLECTION_ID_PATTERN)]
MatchValue = Annotated[str, StringConstraints(min_length=1, max_length=INSERTION_STRING_MAX_LENGTH)]


class Rule(BaseModel):
    """A status message that matches ``match`` leads to ``action`` on ``collection_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RuleName
    description: str | None = None
    match: dict[InsertionStringKey, MatchValue] = Field(
        min_length=1, max_length=INSERTION_STRING_COUNT
    )
    collection_id: str
    action: Action
    target: Target
    #: The blast-radius guard's limit for this rule's adds (adds to its collection in
    #: any 60 minutes); None: MAX_ADDS_PER_COLLECTION_PER_HOUR.
    max_adds_per_hour: int | None = Field(default=None, ge=1, le=20_000)
    #: How long the memberships this rule adds last: the expiry sweep removes each
    #: direct rule cm-remediate added this many days after the add. None: for ever.
    remove_after_days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _expiry_only_for_adds(self) -> Rule:
        if self.remove_after_days is not None and self.action != "add":
            raise ValueError("remove_after_days applies to rules that add")
        return self

    @field_validator("collection_id")
    @classmethod
    def _collection_id(cls, value: str) -> str:
        value = value.strip().upper()
        if not _COLLECTION_ID.match(value):
            raise ValueError(
                f"{value!r} is not a ConfigMgr collection ID (site code + 5 hex digits, "
                "e.g. PS100123)"
            )
        if value.startswith("SMS"):
            raise ValueError(
                f"{value!r} is a built-in collection; remediation rules may only name "
                "collections created for them"
            )
        return value

    @field_validator("match")
    @classmethod
    def _match_not_blank(cls, value: dict[str, str]) -> dict[str, str]:
        for key, expected in value.items():
            if not expected.strip():
                raise ValueError(f"{key} is blank; a rule must match on real text")
        return value

    def matches(self, message: StatusMessage) -> bool:
        """True when the message is a 39997 whose strings equal every ``match`` value."""
        if message.message_id != GENERIC_INFO:
            return False
        for key, expected in self.match.items():
            actual = message.insertion_string(key)
            if actual is None or not sql_equal(actual, expected):
                return False
        return True


class RuleSet(BaseModel):
    """The rules file: a list of uniquely named rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(min_length=1)

    def named(self, name: str) -> Rule | None:
        """The rule called ``name``, or None."""
        return next((rule for rule in self.rules if rule.name == name), None)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            folded = rule.name.casefold()
            if folded in seen:
                raise ValueError(f"rule name {rule.name!r} is used more than once")
            seen.add(folded)
        return rules

    def matching(self, message: StatusMessage) -> list[Rule]:
        """Every rule the message matches, in file order (a message may match several)."""
        return [rule for rule in self.rules if rule.matches(message)]


def _location(loc: tuple[int | str, ...], document: object) -> str:
    parts: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
            # Name the rule, so the operator finds it without counting.
            if loc[:index] == ("rules",) and isinstance(document, dict):
                rules = document.get("rules")
                if isinstance(rules, list) and part < len(rules):
                    name = rules[part].get("name") if isinstance(rules[part], dict) else None
                    if isinstance(name, str):
                        parts[-1] += f" ({name!r})"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def parse_rules(text: str, *, source: str = "rules file") -> RuleSet:
    """Parse and validate rules JSON; raise ConfigurationError naming every problem."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(
            f"{source}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except ValueError as error:  # an integer past Python's 4300-digit limit
        raise ConfigurationError(f"{source}: not valid JSON ({str(error)[:200]})") from None
    except RecursionError:
        raise ConfigurationError(f"{source}: not valid JSON (nested too deeply)") from None
    try:
        return RuleSet.model_validate(document)
    except ValidationError as error:
        problems = [
            f"{_location(item['loc'], document)}: " + item["msg"].removeprefix("Value error, ")
            for item in error.errors()
        ]
        raise ConfigurationError(
            f"{source}: invalid rules:\n  " + "\n  ".join(problems),
            [f"{source}: {problem}" for problem in problems],
        ) from None


def load_rules(path: Path) -> RuleSet:
    """Read the rules file named by REMEDIATION_RULES_FILE."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(
            f"REMEDIATION_RULES_FILE: {path} not found (the path is relative to the app root)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"REMEDIATION_RULES_FILE: cannot read {path}: {error}") from None
    return parse_rules(text, source=f"REMEDIATION_RULES_FILE {path}")


__all__ = [
    "INSERTION_STRING_KEYS",
    "Action",
    "CollectionId",
    "Rule",
    "RuleSet",
    "Target",
    "load_rules",
    "parse_rules",
]
