"""The Bicep templates as pycep-parser reads them, and a small evaluator of their values.

pycep-parser and checkov live in .venv-infra (scripts/bootstrap.sh), not in the test
environment: checkov pins an older pycep-parser. The tests run them as subprocesses.

pycep's trees write an identifier and a string literal alike (``name`` and ``'name'``
both become ``"name"``): a string is read as a reference when a parameter, variable,
resource or module of that template has that name, else as a literal.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
#: The Bicep tools' own virtual environment; INFRA_VENV_DIR as in scripts/bootstrap.sh.
TOOLS_VENV = Path(os.environ.get("INFRA_VENV_DIR", ROOT / ".venv-infra"))


def tool(name: str) -> Path:
    """An executable of .venv-infra; fails (not skips) the test when it is missing."""
    path = TOOLS_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/bootstrap.sh (it installs the Bicep tools)")
    return path


def parse_all() -> dict[str, dict[str, Any]]:
    """{path relative to infra/: {"tree": ...} or {"error": ...}} for every .bicep file."""
    result = subprocess.run(
        [str(tool("python")), str(Path(__file__).with_name("parse_bicep.py")), str(INFRA)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"parse_bicep.py failed ({result.returncode}):\n{result.stderr}")
    parsed: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return parsed


def body(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A resource's or module's own properties, also when it has a loop or a condition."""
    config: dict[str, Any] = resource["config"]
    if "loop_type" in config or "condition" in config:
        inner: dict[str, Any] = config["config"]
        return inner
    return config


def condition(resource: Mapping[str, Any]) -> Any:
    """The ``if (...)`` of a resource or module, or None."""
    return resource["config"].get("condition")


@dataclass(frozen=True)
class Template:
    """One parsed .bicep file."""

    name: str
    tree: dict[str, Any]

    @property
    def parameters(self) -> dict[str, Any]:
        """param declarations by name."""
        return dict(self.tree.get("parameters") or {})

    @property
    def variables(self) -> dict[str, Any]:
        """var declarations by name."""
        return dict(self.tree.get("variables") or {})

    @property
    def resources(self) -> dict[str, Any]:
        """resource declarations by symbolic name."""
        return dict(self.tree.get("resources") or {})

    @property
    def modules(self) -> dict[str, Any]:
        """module declarations by symbolic name."""
        return dict(self.tree.get("modules") or {})

    @property
    def outputs(self) -> dict[str, Any]:
        """output declarations by name."""
        return dict(self.tree.get("outputs") or {})

    def resources_of_type(self, type_: str) -> dict[str, Any]:
        """The resources of one type (``Microsoft.Web/sites``), by symbolic name."""
        return {k: v for k, v in self.resources.items() if v["type"].lower() == type_.lower()}

    def only(self, type_: str) -> dict[str, Any]:
        """The body of the one resource of that type."""
        found = self.resources_of_type(type_)
        assert len(found) == 1, f"{self.name}: expected one {type_}, found {sorted(found)}"
        return body(next(iter(found.values())))

    def decorators(self, parameter: str) -> dict[str, Any]:
        """A parameter's decorators: {"secure": None, "allowed": [...], ...}."""
        return {
            d["type"]: d.get("argument") for d in self.parameters[parameter].get("decorators") or []
        }


def templates(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, Template]:
    """The parsed trees as Templates (the caller has checked that each one parsed)."""
    return {name: Template(name, entry["tree"]) for name, entry in parsed.items()}


def module_call(caller: Template, path: str) -> dict[str, Any]:
    """The one module declaration of ``caller`` that deploys ``path``."""
    calls: list[dict[str, Any]] = [
        m for m in caller.modules.values() if m["detail"]["path"] == path
    ]
    assert len(calls) == 1, f"{caller.name}: expected one module {path}, found {len(calls)}"
    return calls[0]


@dataclass(frozen=True)
class CheckovRun:
    """One `checkov -d infra` run: exit code, JSON reports, the checks that crashed."""

    returncode: int
    reports: list[dict[str, Any]]
    crashed: set[str]
    stderr: str
    seconds: float

    def report(self, check_type: str) -> dict[str, Any]:
        """The report of one framework (bicep, secrets)."""
        found = [r for r in self.reports if r.get("check_type") == check_type]
        assert found, f"checkov wrote no {check_type} report: {self.stderr[-2000:]}"
        return found[0]


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Unknown:
    """A value known only when deploying: a resource property, a module output, a
    function of the subscription."""

    text: str


@dataclass(frozen=True)
class Interpolated:
    """A string with ``${...}`` parts, kept as written."""

    text: str


class NotEvaluable(Exception):
    """The evaluator met a construct it does not know; a test should fail, not guess."""


#: pycep names of functions whose value is known only when deploying.
_DEPLOY_TIME = {
    "tenant",
    "subscription",
    "resource_group",
    "environment",
    "unique_string",
    "to_lower",
    "guid",
    "subscription_resource_id",
    "resource_id",
    "split",
    "replace",
    "last",
    "take",
}


@dataclass
class Scope:
    """A template and the values of its parameters (overrides, arguments or defaults)."""

    template: Template
    arguments: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def parameter(self, name: str) -> Any:
        """A parameter's value: its argument, else its default; Unknown without either."""
        if name not in self._cache:
            if name in self.arguments:
                self._cache[name] = self.arguments[name]()
            else:
                default = self.template.parameters[name].get("default")
                self._cache[name] = (
                    Unknown(f"param {name}") if default is None else evaluate(default, self)
                )
        return self._cache[name]


def _given(value: Any) -> Callable[[], Any]:
    return lambda: value


def _argument(expr: Any, caller: Scope) -> Callable[[], Any]:
    return lambda: evaluate(expr, caller)


def root_scope(template: Template, overrides: Mapping[str, Any] | None = None) -> Scope:
    """main.bicep with some parameters given (as azd would pass them)."""
    return Scope(template, {k: _given(v) for k, v in (overrides or {}).items()})


def module_scope(caller: Scope, path: str, template: Template) -> Scope:
    """The scope of a module, its parameters bound to the caller's arguments (evaluated
    when first read, in the caller's scope)."""
    params = body(module_call(caller.template, path))["params"]
    return Scope(template, {k: _argument(e, caller) for k, e in params.items()})


def _empty(value: Any) -> bool:
    if isinstance(value, Unknown | Interpolated):
        raise NotEvaluable(f"empty() of a deployment-time value {value}")
    return value in ("", None) or value == {} or value == []


def _bicep_string(value: Any) -> Any:
    if isinstance(value, Unknown | Interpolated):
        return Unknown(f"string({value})")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def evaluate(expr: Any, scope: Scope) -> Any:
    """The value of an expression, as far as it is known before deploying."""
    if expr is None or isinstance(expr, bool | int | float):
        return expr
    if isinstance(expr, list):
        return [evaluate(item, scope) for item in expr]
    if isinstance(expr, str):
        return _evaluate_name(expr, scope)
    if isinstance(expr, dict) and set(expr) == {"function"}:
        return _evaluate_function(expr["function"], scope)
    if isinstance(expr, dict) and set(expr) == {"operator"}:
        return _evaluate_operator(expr["operator"], scope)
    if isinstance(expr, dict):  # an object literal; pycep keeps quoted keys' quotes
        return {key.strip("'"): evaluate(value, scope) for key, value in expr.items()}
    raise NotEvaluable(f"unknown node {expr!r}")


def _evaluate_name(text: str, scope: Scope) -> Any:
    template = scope.template
    if "${" in text:
        return Interpolated(text)
    if text in template.parameters:
        return scope.parameter(text)
    if text in template.variables:
        return evaluate(template.variables[text]["value"], scope)
    if text in template.resources or text in template.modules:
        return Unknown(text)
    return text


def _evaluate_function(function: Mapping[str, Any], scope: Scope) -> Any:
    name = function["type"]
    args = [evaluate(a, scope) for a in (function.get("parameters") or {}).values()]
    if name == "union":
        if not all(isinstance(a, dict) for a in args):
            raise NotEvaluable(f"union() of a non-object: {args}")
        merged: dict[str, Any] = {}
        for arg in args:
            merged.update(arg)
        return merged
    if name == "empty":
        return _empty(args[0])
    if name == "string":
        return _bicep_string(args[0])
    if name in _DEPLOY_TIME:
        return Unknown(f"{name}()")
    raise NotEvaluable(f"function {name}() is not known to the evaluator")


def _evaluate_operator(operator: Mapping[str, Any], scope: Scope) -> Any:
    kind = operator["type"]
    operands = operator["operands"]
    if kind == "conditional":
        test = evaluate(operands["condition"], scope)
        if not isinstance(test, bool):
            raise NotEvaluable(f"condition {operands['condition']!r} is {test!r}")
        return evaluate(operands["true_value" if test else "false_value"], scope)
    if kind == "not":
        value = evaluate(operands["bool_value"], scope)
        if not isinstance(value, bool):
            raise NotEvaluable(f"!{value!r}")
        return not value
    if kind in ("and", "or"):  # && and ||: both operands must be known booleans
        left = evaluate(operands["operand_1"], scope)
        right = evaluate(operands["operand_2"], scope)
        if not isinstance(left, bool) or not isinstance(right, bool):
            raise NotEvaluable(f"{kind} of {left!r} and {right!r}")
        return (left and right) if kind == "and" else (left or right)
    if kind in ("equals", "not_equals"):
        left = evaluate(operands["operand_1"], scope)
        right = evaluate(operands["operand_2"], scope)
        if isinstance(left, Unknown) or isinstance(right, Unknown):
            raise NotEvaluable(f"comparison of deployment-time values {left} {right}")
        return (left == right) == (kind == "equals")
    if kind == "property_accessor":
        return Unknown(json.dumps(operands, default=str))
    raise NotEvaluable(f"operator {kind} is not known to the evaluator")


# --------------------------------------------------------------------- app settings


@dataclass(frozen=True)
class AppSetting:
    """One app setting the templates write, and whether every deployment writes it."""

    name: str
    always: bool


def app_settings_source(app: Template) -> str:
    """The variable the function app's siteConfig.appSettings loop runs over."""
    site = app.only("Microsoft.Web/sites")
    loop = site["properties"]["siteConfig"]["appSettings"]
    assert loop["loop_type"]["type"] == "object", "appSettings should loop over items(<object>)"
    source: str = loop["loop_type"]["detail"]["object_name"]
    assert source in app.variables, f"appSettings should loop over a variable, not {source!r}"
    return source


def declared_settings(main: Template, app: Template, app_path: str) -> dict[str, AppSetting]:
    """Every app-setting name the templates can write, read from the expressions alone
    (both branches of every condition): always written, or only in some deployments."""
    call = body(module_call(main, app_path))["params"]
    found: dict[str, AppSetting] = {}

    def visit(expr: Any, template: Template, always: bool) -> None:
        if isinstance(expr, str):
            if expr in template.variables:
                visit(template.variables[expr]["value"], template, always)
            elif template is app and expr in template.parameters:
                visit(call[expr], main, always)
            elif expr in template.parameters:
                raise NotEvaluable(f"{template.name}: settings from parameter {expr}")
            return
        if isinstance(expr, dict) and set(expr) == {"function"}:
            function = expr["function"]
            if function["type"] != "union":
                raise NotEvaluable(f"settings from {function['type']}()")
            for arg in function["parameters"].values():
                visit(arg, template, always)
            return
        if isinstance(expr, dict) and set(expr) == {"operator"}:
            operator = expr["operator"]
            if operator["type"] != "conditional":
                raise NotEvaluable(f"settings from operator {operator['type']}")
            visit(operator["operands"]["true_value"], template, False)
            visit(operator["operands"]["false_value"], template, False)
            return
        if isinstance(expr, dict):
            for key in expr:
                name = key.strip("'")
                before = found.get(name)
                found[name] = AppSetting(name, always or (before is not None and before.always))
            return
        raise NotEvaluable(f"settings from {expr!r}")

    visit(app_settings_source(app), app, True)
    return found


def evaluated_settings(
    main: Template, app: Template, app_path: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The app settings one deployment writes, main.bicep's parameters given ``overrides``
    (the rest at their defaults)."""
    scope = module_scope(root_scope(main, overrides), app_path, app)
    value = evaluate(app_settings_source(app), scope)
    assert isinstance(value, dict)
    return value
