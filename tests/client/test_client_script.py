"""The task sequence script client/Send-RemediationStatusMessage.ps1, checked without Windows.

PowerShell is not available on the machines that run these tests, so the script is read
as text: its help, its exit codes, its validation patterns (evaluated with Python's
``re``, which is why they are written in the common subset of .NET and Python regex),
and that every string the rules file matches on can be sent by it. When the
``tree_sitter_powershell`` grammar is installed the script is also parsed; when
``pwsh`` (or Windows PowerShell) is on the PATH it is run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.domain.rules import load_rules
from shared.domain.status_messages import (
    GENERIC_ERROR,
    GENERIC_INFO,
    GENERIC_WARNING,
    INSERTION_STRING_MAX_LENGTH,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "client" / "Send-RemediationStatusMessage.ps1"
CLIENT_DOC = REPO / "docs" / "client.md"
RULES = REPO / "rules.json"

PARAMETERS = {"Type", "Value", "Detail", "Severity", "LogPath"}
EXIT_CODES = {0, 1, 2, 3, 4}


# --- reading the script ---------------------------------------------------------------


def script_text() -> str:
    return SCRIPT.read_text(encoding="ascii")


def help_block() -> str:
    """The script's comment-based help: the first <# ... #> block."""
    text = script_text()
    assert text.startswith("<#"), "the comment-based help must open the script"
    return text[2 : text.index("#>")]


def help_sections() -> list[tuple[str, str, str]]:
    """(keyword, argument, body) for every .KEYWORD of the help, in order."""
    sections: list[tuple[str, str, str]] = []
    keyword = argument = None
    body: list[str] = []
    for line in help_block().splitlines():
        heading = re.match(r"^\.([A-Z]+)(?:[ \t]+(\S+))?[ \t]*$", line)
        if heading:
            if keyword is not None:
                sections.append((keyword, argument or "", "\n".join(body)))
            keyword, argument, body = heading.group(1), heading.group(2), []
        else:
            body.append(line)
    if keyword is not None:
        sections.append((keyword, argument or "", "\n".join(body)))
    return sections


def section(keyword: str) -> list[tuple[str, str]]:
    return [(arg, body) for kw, arg, body in help_sections() if kw == keyword]


def code_text() -> str:
    """The script without its comment-based help and without # comments."""
    text = script_text()
    text = text[text.index("#>") + 2 :]
    text = re.sub(r"<#.*?#>", "", text, flags=re.DOTALL)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def param_block() -> str:
    """The script's own param( ... ) block (the first one after the help)."""
    text = script_text()[script_text().index("#>") :]
    start = text.index("param(")
    depth = 0
    for index in range(start + len("param"), len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[start : index + 1]
    raise AssertionError("unbalanced param block")


def script_parameters() -> set[str]:
    return set(re.findall(r"\[(?:string|int|switch)\]\$(\w+)", param_block()))


def ps_single_quoted(name: str) -> str:
    """The value of ``$name = '...'`` in the script (a PowerShell single-quoted string)."""
    found = re.findall(rf"^\${name} = '((?:[^']|'')*)'\s*$", script_text(), flags=re.MULTILINE)
    assert len(found) == 1, f"${name} must be assigned exactly once, as a single-quoted string"
    return found[0].replace("''", "'")


IDENTIFIER_PATTERN = ps_single_quoted("IdentifierPattern")
DETAIL_PATTERN = ps_single_quoted("DetailPattern")
VARIABLE_NAME_UNSAFE = ps_single_quoted("VariableNameUnsafe")


def whole_match(pattern: str, text: str) -> bool:
    """What the script's Test-WholeMatch does: [regex]::Match, then the match must cover
    the whole text (a bare ``$`` also matches before a final newline)."""
    match = re.search(pattern, text)
    return match is not None and match.start() == 0 and match.end() == len(text)


def can_send_identifier(text: str) -> bool:
    return 1 <= len(text) <= INSERTION_STRING_MAX_LENGTH and whole_match(IDENTIFIER_PATTERN, text)


def can_send_detail(text: str) -> bool:
    return 1 <= len(text) <= INSERTION_STRING_MAX_LENGTH and whole_match(DETAIL_PATTERN, text)


def ts_variable_name(type_: str, value: str) -> str:
    """The 'already sent' task sequence variable, built like the script builds it."""
    return "CMRemediate_{}_{}_Sent".format(
        re.sub(VARIABLE_NAME_UNSAFE, "_", type_), re.sub(VARIABLE_NAME_UNSAFE, "_", value)
    )


def rule_matches() -> list[dict[str, str]]:
    return [dict(rule.match) for rule in load_rules(RULES).rules]


# --- the file itself ------------------------------------------------------------------


def test_script_exists_and_is_ascii() -> None:
    # Windows PowerShell 5.1 reads a file without byte order mark in the ANSI code page:
    # anything but ASCII (a dash, a quote from a word processor) could change the code.
    raw = SCRIPT.read_bytes()
    assert raw, "the script is empty"
    raw.decode("ascii")
    assert b"\t" not in raw


def test_strict_mode_and_stop_on_error() -> None:
    code = code_text()
    assert re.search(r"^Set-StrictMode -Version Latest$", code, flags=re.MULTILINE)
    assert re.search(r"^\$ErrorActionPreference = 'Stop'$", code, flags=re.MULTILINE)


def test_cmdletbinding_with_whatif_support() -> None:
    text = script_text()
    after_help = text[text.index("#>") + 2 :].lstrip()
    assert after_help.startswith("[CmdletBinding(SupportsShouldProcess = $true)]\nparam(")
    assert "$PSCmdlet.ShouldProcess(" in code_text()


def test_parameters() -> None:
    assert script_parameters() == PARAMETERS
    block = param_block()
    for mandatory in ("Type", "Value"):
        assert re.search(
            rf"\[Parameter\(Mandatory = \$true\)\]\s*\[AllowEmptyString\(\)\]\s*\[string\]\${mandatory}\b",
            block,
        ), f"-{mandatory} must be mandatory (and empty strings refused by the script's own check)"
    assert "$Severity = 'Info'" in block
    assert "$LogPath = ''" in block


# --- the help -------------------------------------------------------------------------


def test_help_has_the_standard_sections() -> None:
    keywords = {kw for kw, _, _ in help_sections()}
    assert {"SYNOPSIS", "DESCRIPTION", "PARAMETER", "EXAMPLE", "NOTES"} <= keywords
    assert section("SYNOPSIS")[0][1].strip()
    assert section("DESCRIPTION")[0][1].strip()


def test_every_parameter_is_documented() -> None:
    documented = {arg for arg, _ in section("PARAMETER")}
    assert documented == script_parameters()
    for name, body in section("PARAMETER"):
        assert len(body.strip()) > 20, f".PARAMETER {name} says nothing useful"


def test_examples_show_the_task_sequence_step_and_the_command_line() -> None:
    examples = [body for _, body in section("EXAMPLE")]
    assert len(examples) >= 2
    assert any("Run PowerShell Script" in body for body in examples)
    assert any(
        re.search(r"powershell\.exe\b.*-ExecutionPolicy Bypass\b.*-File\b", body)
        for body in examples
    )
    for body in examples:
        assert "Send-RemediationStatusMessage.ps1" in body


def documented_exit_codes(text: str) -> dict[int, str]:
    codes: dict[int, str] = {}
    for match in re.finditer(r"^\s+(\d)\s{2,}(\S.*)$", text, flags=re.MULTILINE):
        codes[int(match.group(1))] = match.group(2)
    return codes


def test_documented_exit_codes_match_the_exit_statements() -> None:
    notes = section("NOTES")[0][1]
    assert "Exit codes:" in notes
    documented = documented_exit_codes(notes.split("Exit codes:", 1)[1])
    used = {int(code) for code in re.findall(r"\bexit (\d+)\b", code_text())}
    assert set(documented) == used == EXIT_CODES
    # No computed exit codes that the help could not describe.
    assert not re.search(r"\bexit \$", code_text())
    assert documented[0].startswith("Sent")
    assert documented[1].startswith("Invalid parameter")
    assert "Microsoft.SMS.Event" in documented[2]
    assert documented[3].startswith("Submit failed")
    assert documented[4].startswith("Unexpected error")


def test_every_exit_is_logged_with_its_code() -> None:
    # Each refusal or failure writes its exit code to the CMTrace log before exiting.
    code = code_text()
    for number in EXIT_CODES:
        assert f"Exit code {number}." in code


def test_notes_submit_failure_explains_queueing_and_sending_early() -> None:
    notes = section("NOTES")[0][1]
    flat = " ".join(notes.split())
    assert "queues status messages and retries" in flat
    assert "before it switches from VPN to the cloud management gateway" in flat


# --- the status message ---------------------------------------------------------------


def test_script_raises_a_generic_status_message() -> None:
    code = code_text()
    assert "New-Object -ComObject Microsoft.SMS.Event" in code
    assert "SetProperty('Attribute403', 'GenericMsg_SeeInsertionStrings')" in code
    assert "SetProperty('InsertionString1', $Type)" in code
    assert "SetProperty('InsertionString2', $Value)" in code
    assert "SetProperty('InsertionString3', $Detail)" in code
    assert ".Submit()" in code
    assert "$statusEvent.EventType = $eventType" in code
    # Nothing beyond InsertionString3.
    assert set(re.findall(r"'InsertionString(\d+)'", code)) == {"1", "2", "3"}


def test_severities_map_to_the_generic_event_types_and_message_ids() -> None:
    code = code_text()
    for name, event_type, message_id in (
        ("Info", "SMS_GenericStatusMessage_Info", GENERIC_INFO),
        ("Warning", "SMS_GenericStatusMessage_Warning", GENERIC_WARNING),
        ("Error", "SMS_GenericStatusMessage_Error", GENERIC_ERROR),
    ):
        assert re.search(rf"'{name}'\s+= '{event_type}'", code)
        assert re.search(rf"'{name}'\s+= {message_id}\b", code)


def test_validation_happens_before_the_com_object_is_created() -> None:
    code = code_text()
    assert code.index("exit 1") < code.index("New-Object -ComObject Microsoft.SMS.Event")
    assert code.index("New-Object -ComObject Microsoft.SMS.Event") < code.index(".Submit()")
    assert code.index("ShouldProcess(") < code.index(".Submit()")


# --- the validation patterns ----------------------------------------------------------


def test_patterns_are_in_the_common_subset_of_net_and_python_regex() -> None:
    # Anchored, one character class with a bounded repeat: no lookarounds, named groups,
    # inline options or escapes whose meaning differs between the two engines.
    for pattern in (IDENTIFIER_PATTERN, DETAIL_PATTERN):
        assert re.fullmatch(r"\^\[[A-Za-z0-9_.: -]+\]\{1,255\}\$", pattern), pattern
        re.compile(pattern)
    assert IDENTIFIER_PATTERN == "^[A-Za-z0-9_.-]{1,255}$"
    assert DETAIL_PATTERN == "^[A-Za-z0-9_.: -]{1,255}$"
    assert re.fullmatch(r"\[\^[A-Za-z0-9_-]+\]", VARIABLE_NAME_UNSAFE)


@pytest.mark.parametrize(
    "text",
    [
        "MsgType_Office365Upgrade",
        "projectInstalled",
        "visioInstalled",
        "roomPluginInstalled",
        "Value-1.2_3",
        "a",
        "x" * 255,
    ],
)
def test_identifier_pattern_accepts(text: str) -> None:
    assert can_send_identifier(text)


HOSTILE = [
    "",
    "x" * 256,
    "projectInstalled\n",
    "project\nInstalled",
    "project Installed",
    " projectInstalled",
    "projectInstalled ",
    "'; DROP TABLE v_StatusMessage; --",
    "project'Installed",
    'project"Installed',
    "project;Installed",
    "project`Installed",
    "$(Remove-Item C:\\)",
    "%windir%",
    "<script>",
    "]LOG]!>",
    "a:b",
    "project\tInstalled",
    "project\x00Installed",
    "proj\u00e9ctInstalled",
    "\u212aelvin",  # KELVIN SIGN: matches [A-Za-z] case-insensitively in .NET and Python
    "\uff50rojectInstalled",  # FULLWIDTH LATIN SMALL LETTER P
    "\u0661\u0662",  # ARABIC-INDIC DIGITS: \d would take them, [0-9] does not
]


@pytest.mark.parametrize("text", HOSTILE)
def test_identifier_pattern_rejects(text: str) -> None:
    assert not can_send_identifier(text)


@pytest.mark.parametrize(
    "text",
    ["Visio 16.0 x86", "Project Professional 2016: build 16.0.4266.1001", "a", "x" * 255],
)
def test_detail_pattern_accepts(text: str) -> None:
    assert can_send_detail(text)


@pytest.mark.parametrize(
    "text",
    [
        t
        for t in HOSTILE
        if t not in {"project Installed", "a:b"} and not t.startswith(" ") and not t.endswith(" ")
    ],
)
def test_detail_pattern_rejects(text: str) -> None:
    assert not can_send_detail(text)


def test_bare_dollar_alone_would_let_a_trailing_newline_through() -> None:
    # Why the script compares the match length: '$' matches before a final newline in
    # .NET as in Python. Without the length check a hostile value could end in '\n'.
    assert re.search(IDENTIFIER_PATTERN, "projectInstalled\n")
    assert not whole_match(IDENTIFIER_PATTERN, "projectInstalled\n")
    code = code_text()
    assert "$match.Length -eq $Text.Length" in code
    assert "$match.Index -eq 0" in code


def test_the_pattern_length_bound_is_the_insertion_string_limit() -> None:
    assert INSERTION_STRING_MAX_LENGTH == 255
    assert "$MaxInsertionStringLength = 255" in code_text()


# --- the rules file -------------------------------------------------------------------


def test_rules_use_only_insertion_strings_the_script_can_send() -> None:
    for match in rule_matches():
        assert set(match) <= {"InsertionString1", "InsertionString2", "InsertionString3"}, match


def test_every_rule_value_can_be_sent() -> None:
    matches = rule_matches()
    assert matches, "rules.json has no rules"
    for match in matches:
        for key, value in match.items():
            if key == "InsertionString3":
                assert can_send_detail(value), (key, value)
            else:
                assert can_send_identifier(value), (key, value)


def test_the_office365_upgrade_facts_are_in_the_rules() -> None:
    values = {(m.get("InsertionString1"), m.get("InsertionString2")) for m in rule_matches()}
    for fact in ("projectInstalled", "visioInstalled", "roomPluginInstalled"):
        assert ("MsgType_Office365Upgrade", fact) in values


def test_rules_json_is_read_from_the_repository() -> None:
    # The same file the function app deploys, parsed as plain JSON too.
    raw = json.loads(RULES.read_text(encoding="utf-8"))
    assert len(raw["rules"]) == len(rule_matches())


# --- the 'already sent' task sequence variable ----------------------------------------


def test_sent_variable_names_are_valid_task_sequence_variable_names() -> None:
    # Letters, digits, underscore, hyphen; starts with a letter; 1..256 characters.
    for match in rule_matches():
        name = ts_variable_name(match["InsertionString1"], match.get("InsertionString2", ""))
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,255}", name), name
    assert (
        ts_variable_name("MsgType_Office365Upgrade", "projectInstalled")
        == "CMRemediate_MsgType_Office365Upgrade_projectInstalled_Sent"
    )
    assert ts_variable_name("MsgType.v2", "a.b") == "CMRemediate_MsgType_v2_a_b_Sent"


def test_script_sets_the_sent_variable_only_after_submit() -> None:
    code = code_text()
    assert "'CMRemediate_{0}_{1}_Sent' -f" in code
    assert "$MaxVariableNameLength = 256" in code
    assert code.index(".Submit()") < code.index("$tsEnvironment.Value($variableName) = 'True'")


# --- the log --------------------------------------------------------------------------

CMTRACE_LINE = re.compile(
    r"^<!\[LOG\[(?P<message>.*)\]LOG\]!>"
    r'<time="\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{3}" date="\d{2}-\d{2}-\d{4}" '
    r'component="Send-RemediationStatusMessage" context="" type="[123]" '
    r'thread="\d+" file="Send-RemediationStatusMessage\.ps1">$'
)


def test_log_line_template_is_cmtrace() -> None:
    code = code_text()
    template = re.search(r"\$line = '([^']*)' -f", code)
    assert template, "the CMTrace line template must be one single-quoted string"
    # .NET composite formatting with plain {0}..{7} works like Python's str.format.
    line = template.group(1).format(
        "Starting.",
        "08:15:00.123",
        "-060",
        "11-20-2026",
        "Send-RemediationStatusMessage",
        1,
        7,
        "Send-RemediationStatusMessage.ps1",
    )
    assert CMTRACE_LINE.match(line), line
    assert "'HH:mm:ss.fff'" in code
    assert "'MM-dd-yyyy'" in code
    assert "'+000;-000;+000'" in code
    assert "$LogFileName = 'Send-RemediationStatusMessage.log'" in code
    assert "_SMSTSLogPath" in code
    assert "$env:TEMP" in code


def test_invalid_values_are_never_echoed() -> None:
    # Get-ValueProblem reports the parameter's name and why, never the (hostile) value.
    code = code_text()
    body = code[code.index("function Get-ValueProblem") : code.index("\ntry {")]
    returns = [line for line in body.splitlines() if line.strip().startswith("return")]
    assert len(returns) == 4, returns
    for line in returns:
        assert "$Text" not in line.replace("$Text.Length", ""), line
    # The log line before validation names no value either.
    before = code[code.index("\ntry {") : code.index("Get-ValueProblem -Name 'Type'")]
    assert "$Type" not in before and "$Value" not in before and "$Detail" not in before


# --- the administrator's documentation ------------------------------------------------


def test_client_doc_covers_the_script() -> None:
    doc = CLIENT_DOC.read_text(encoding="utf-8")
    for parameter in PARAMETERS:
        assert f"-{parameter}" in doc, parameter
    for needed in (
        "Run PowerShell Script",
        "Send-RemediationStatusMessage.log",
        "_SMSTSLogPath",
        "CMRemediate_MsgType_Office365Upgrade_projectInstalled_Sent",
        "Status Message Queries",
        "39997",
        "rules.json",
        "not authenticated",
    ):
        assert needed in doc, needed


def test_client_doc_lists_the_same_exit_codes() -> None:
    doc = CLIENT_DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `?(\d)`? \|", doc, flags=re.MULTILINE)
    assert {int(code) for code in rows} == EXIT_CODES


# --- optional: parse and run ----------------------------------------------------------


def test_script_parses_as_powershell() -> None:
    tree_sitter = pytest.importorskip("tree_sitter")
    grammar = pytest.importorskip("tree_sitter_powershell")
    parser = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
    tree = parser.parse(SCRIPT.read_bytes())

    problems: list[str] = []

    def walk(node: object) -> None:
        if node.type == "ERROR" or node.is_missing:  # type: ignore[attr-defined]
            problems.append(f"line {node.start_point[0] + 1}: {node.type}")  # type: ignore[attr-defined]
        for child in node.children:  # type: ignore[attr-defined]
            walk(child)

    walk(tree.root_node)
    assert not problems, problems
    kinds = [child.type for child in tree.root_node.named_children]
    assert kinds[:2] == ["comment", "param_block"], kinds


def find_powershell() -> str | None:
    return shutil.which("pwsh") or shutil.which("powershell")


needs_powershell = pytest.mark.skipif(
    find_powershell() is None, reason="no pwsh or powershell on PATH"
)


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    executable = find_powershell()
    assert executable is not None
    return subprocess.run(
        [
            executable,
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-File",
            str(SCRIPT),
            "-LogPath",
            str(tmp_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def log_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "Send-RemediationStatusMessage.log").read_text(encoding="utf-8").splitlines()


@needs_powershell
@pytest.mark.parametrize(
    "args",
    [
        ["-Type", "MsgType_Office365Upgrade", "-Value", "project;Installed"],
        ["-Type", "x" * 256, "-Value", "projectInstalled"],
        ["-Type", "MsgType_Office365Upgrade", "-Value", ""],
        ["-Type", "MsgType_Office365Upgrade", "-Value", "projectInstalled", "-Detail", 'a"b'],
        ["-Type", "MsgType_Office365Upgrade", "-Value", "projectInstalled", "-Severity", "Fatal"],
    ],
)
def test_pwsh_refuses_invalid_values_with_exit_1(tmp_path: Path, args: list[str]) -> None:
    result = run_script(tmp_path, *args)
    assert result.returncode == 1, result.stderr
    lines = log_lines(tmp_path)
    assert all(CMTRACE_LINE.match(line) for line in lines), lines
    assert any("Invalid parameter" in line for line in lines)
    assert "project;Installed" not in "\n".join(lines)


@needs_powershell
def test_pwsh_without_a_configmgr_client_exits_2(tmp_path: Path) -> None:
    # Skipped where a ConfigMgr client is installed: there the message would be sent.
    if (Path("C:/Windows/CCM")).exists():
        pytest.skip("a ConfigMgr client is installed here")
    result = run_script(tmp_path, "-Type", "MsgType_Office365Upgrade", "-Value", "projectInstalled")
    assert result.returncode == 2, result.stderr
    lines = log_lines(tmp_path)
    assert all(CMTRACE_LINE.match(line) for line in lines), lines
    assert any("Microsoft.SMS.Event" in line and 'type="3"' in line for line in lines)


@needs_powershell
def test_pwsh_missing_mandatory_parameter_fails(tmp_path: Path) -> None:
    result = run_script(tmp_path, "-Type", "MsgType_Office365Upgrade")
    assert result.returncode == 1
