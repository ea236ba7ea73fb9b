"""The `postwarden` command line."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from postwarden.policy.load import LoadedPolicy, PolicyInvalid, load_policy
from postwarden.policy.problems import Problem, dumps, errors, to_json
from postwarden.schema import SCHEMA_PATH, schema_text
from postwarden.summary import summarize, summary_lines

app = typer.Typer(
    name="postwarden",
    help="Validate a mail policy and provision the mail servers it describes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


PolicyArg = Annotated[
    Path, typer.Argument(help="The policy file.", show_default=False, metavar="POLICY")
]
SecretsOpt = Annotated[
    Path | None,
    typer.Option("--secrets", help="Secrets file [default: secrets.yml beside the policy]."),
]
VaultOpt = Annotated[
    Path | None,
    typer.Option(
        "--vault-password-file",
        help="Password file for an ansible-vault encrypted secrets file.",
        envvar="ANSIBLE_VAULT_PASSWORD_FILE",
    ),
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Output format.")]


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        typer.echo(problem.text(), err=True)


@app.command()
def validate(
    policy: PolicyArg,
    secrets: SecretsOpt = None,
    vault_password_file: VaultOpt = None,
    output: FormatOpt = OutputFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
) -> None:
    """Check a policy: every problem at once, with file:line:col; exit 1 if any."""
    try:
        loaded = load_policy(policy, secrets, vault_password_file)
    except PolicyInvalid as invalid:
        _report_invalid(str(policy), invalid.problems, output)
        raise typer.Exit(1) from None
    _report_valid(loaded, output)
    if strict and loaded.warnings:
        raise typer.Exit(1)


def _report_invalid(name: str, problems: list[Problem], output: OutputFormat) -> None:
    count = len(errors(problems))
    if output is OutputFormat.json:
        typer.echo(dumps({"policy": name, "valid": False, "problems": to_json(problems)}))
        return
    _print_problems(problems)
    typer.echo(f"{name}: {count} error{'s' if count != 1 else ''}, nothing was changed", err=True)


def _report_valid(loaded: LoadedPolicy, output: OutputFormat) -> None:
    summary = summarize(loaded.policy)
    if output is OutputFormat.json:
        typer.echo(
            dumps(
                {
                    "policy": loaded.policy_file,
                    "valid": True,
                    "problems": to_json(loaded.warnings),
                    "summary": summary,
                }
            )
        )
        return
    _print_problems(loaded.warnings)
    typer.echo(f"{loaded.policy_file}: valid")
    for line in summary_lines(summary):
        typer.echo(line)


@app.command()
def schema(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help=f"Where to write [default: {SCHEMA_PATH}]; - for stdout."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the file differs from the models.")
    ] = False,
) -> None:
    """Write the JSON schema of the policy file, generated from the models."""
    text = schema_text()
    if output is not None and str(output) == "-":
        sys.stdout.write(text)
        return
    target = output or SCHEMA_PATH
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            typer.echo(f"{target}: out of date; run 'postwarden schema'", err=True)
            raise typer.Exit(1)
        typer.echo(f"{target}: up to date")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    typer.echo(f"wrote {target}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
