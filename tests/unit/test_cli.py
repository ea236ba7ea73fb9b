"""The command line: exit codes, text and JSON output, schema drift, no secrets shown."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from postwarden.cli import app
from postwarden.schema import schema_text
from tests.conftest import CONTRACT, EXAMPLE_INVENTORY, MINIMAL_POLICY, ROOT

runner = CliRunner()
WritePolicy = Callable[..., Path]


def test_validate_the_example_inventory() -> None:
    result = runner.invoke(app, ["validate", str(EXAMPLE_INVENTORY / "policy.yml")])
    assert result.exit_code == 0, result.output
    assert "policy.yml: valid" in result.stdout
    assert "users          4 (3 active, 1 disabled)" in result.stdout
    assert "ip pools       2 with addresses: 2 active, 1 draining" in result.stdout


def test_invalid_policy_exits_1_on_stderr_only(write_policy: WritePolicy) -> None:
    policy = write_policy(
        MINIMAL_POLICY.replace("example.com: {}", "example.com: {throttle: defualt}")
        + "throttles:\n  default: {messages: 10/m}\n  staff: {messages: 2/s, action: shout}\n"
    )
    result = runner.invoke(app, ["validate", str(policy)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        f"{policy}:8:34: throttles.staff.action: "
        "'shout' is not one of: defer, reject, hold, notify",
        f"{policy}: 1 error, nothing was changed",
    ]


def test_json_output_for_bots(write_policy: WritePolicy) -> None:
    policy = write_policy(MINIMAL_POLICY.replace("example.com: {}", "example.com: {ip_pool: x}"))
    result = runner.invoke(app, ["validate", str(policy), "--format", "json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["valid"] is False
    assert payload["problems"] == [
        {
            "file": str(policy),
            "line": 5,
            "column": 26,
            "path": "domains.example.com.ip_pool",
            "message": "unknown ip pool 'x'",
            "hint": "no ip pools are declared",
            "severity": "error",
        }
    ]


def test_json_output_when_valid() -> None:
    result = runner.invoke(app, ["validate", str(CONTRACT), "--format", "json"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["valid"] is True
    assert payload["summary"]["users"] == 4
    assert payload["summary"]["notification_channels"] == {"email": 1, "sms": 1, "webhook": 1}
    assert {p["severity"] for p in payload["problems"]} == {"warning"}


def test_strict_turns_warnings_into_failure() -> None:
    assert runner.invoke(app, ["validate", str(CONTRACT)]).exit_code == 0
    assert runner.invoke(app, ["validate", str(CONTRACT), "--strict"]).exit_code == 1


def test_secrets_never_appear_in_any_output(write_policy: WritePolicy) -> None:
    secret = "Zq8-very-secret-relay-pw"
    policy = write_policy(
        MINIMAL_POLICY.replace(
            "domains:",
            "  notification_relay:\n    host: relay.example.net\n    password: !secret relay\n"
            "domains:",
        ),
        secrets=(
            f"relay: {secret}\nunused: {secret}x\npassword_hashes:\n  a@example.com: {secret}\n"
        ),
    )
    for output in ("text", "json"):
        result = runner.invoke(app, ["validate", str(policy), "--format", output])
        assert secret not in result.output
    result = runner.invoke(app, ["validate", str(policy)])
    assert result.exit_code == 1
    assert "password_hashes.a@example.com: this is not a password hash" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2


def test_schema_is_committed_and_current() -> None:
    committed = (ROOT / "policy_schema" / "postwarden.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "run 'postwarden schema' and commit the result"


def test_schema_check_detects_drift(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert runner.invoke(app, ["schema", "-o", str(target)]).exit_code == 0
    assert runner.invoke(app, ["schema", "-o", str(target), "--check"]).exit_code == 0
    target.write_text(target.read_text().replace('"server"', '"servr"', 1))
    result = runner.invoke(app, ["schema", "-o", str(target), "--check"])
    assert result.exit_code == 1
    assert "out of date" in result.stderr


def test_schema_describes_every_section() -> None:
    schema = json.loads(schema_text())
    assert set(schema["required"]) == {"server", "domains"}
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "version",
        "server",
        "password_policy",
        "domains",
        "users",
        "lists",
        "throttles",
        "abuse",
        "ip_pools",
        "notifications",
        "events",
        "reports",
    }


def test_example_policies_carry_the_schema_modeline() -> None:
    first_line = (EXAMPLE_INVENTORY / "policy.yml").read_text().splitlines()[0]
    assert (
        first_line == "# yaml-language-server: $schema=../../policy_schema/postwarden.schema.json"
    )
    target = (EXAMPLE_INVENTORY / first_line.split("$schema=")[1]).resolve()
    assert target == (ROOT / "policy_schema" / "postwarden.schema.json").resolve()


def test_policy_schema_examples_validate() -> None:
    examples = sorted((ROOT / "policy_schema" / "examples").glob("*.yml"))
    assert examples
    for example in examples:
        result = runner.invoke(app, ["validate", str(example), "--strict"])
        assert result.exit_code == 0, result.output


def test_console_script_runs_as_a_process(write_policy: WritePolicy) -> None:
    policy = write_policy("server: [\n")
    result = subprocess.run(
        [sys.executable, "-m", "postwarden", "validate", str(policy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{policy}:2:1: YAML syntax error" in result.stderr
