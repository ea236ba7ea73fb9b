"""The `postwarden` command line."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from postwarden.accounts.audit import DEFAULT_COMMON_TRIES
from postwarden.policy.load import LoadedPolicy, PolicyInvalid, load_policy
from postwarden.policy.problems import Problem, dumps, errors, to_json
from postwarden.render.guard import UnsafeValue
from postwarden.render.host import HostSettings, load_host_settings
from postwarden.render.plan import DEFAULT_MAX_SHARE, as_json, as_markdown, as_text, make_plan
from postwarden.render.render import render
from postwarden.render.tree import RenderedTree, write_tree
from postwarden.schema import SCHEMA_PATH, schema_text
from postwarden.summary import summarize, summary_lines
from postwarden.visible import visible

if TYPE_CHECKING:
    from postwarden.accounts.audit import Expiring, Failure
    from postwarden.policy.models import Policy
    from postwarden.policy.secrets import Secrets
    from postwarden.policyd.settings import PolicydSettings
    from postwarden.reports.builders import Table
    from postwarden.reports.make import UsageSource
    from postwarden.reports.period import Period

app = typer.Typer(
    name="postwarden",
    help="Validate a mail policy and provision the mail servers it describes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        typer.echo(version("postwarden"))
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print postwarden's version.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Validate a mail policy and provision the mail servers it describes."""


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


HostVarsOpt = Annotated[
    Path | None,
    typer.Option("--host-vars", help="YAML file of host settings (listen addresses, relayhost)."),
]


class PlanFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _load_or_exit(
    policy: Path, secrets: Path | None, vault_password_file: Path | None, output: OutputFormat
) -> LoadedPolicy:
    try:
        loaded = load_policy(policy, secrets, vault_password_file)
    except PolicyInvalid as invalid:
        _report_invalid(str(policy), invalid.problems, output)
        raise typer.Exit(1) from None
    _print_problems(loaded.warnings)
    return loaded


def _host_or_exit(host_vars: Path | None) -> HostSettings:
    try:
        return load_host_settings(host_vars)
    except PolicyInvalid as invalid:
        _report_invalid(str(host_vars), invalid.problems, OutputFormat.text)
        raise typer.Exit(1) from None


def _render_or_exit(loaded: LoadedPolicy, host: HostSettings) -> RenderedTree:
    """The host's files; a value the renderer's own guard refuses stops everything."""
    try:
        return render(loaded, host)
    except UnsafeValue as unsafe:
        typer.echo(f"{loaded.policy_file}: {unsafe}", err=True)
        typer.echo(f"{loaded.policy_file}: nothing was written", err=True)
        raise typer.Exit(1) from None


@app.command("render")
def render_command(
    policy: PolicyArg,
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Directory that receives the host's tree.")
    ],
    secrets: SecretsOpt = None,
    vault_password_file: VaultOpt = None,
    host_vars: HostVarsOpt = None,
) -> None:
    """Render every config file into DIR/etc/...: all of it, or nothing on error."""
    loaded = _load_or_exit(policy, secrets, vault_password_file, OutputFormat.text)
    tree = _render_or_exit(loaded, _host_or_exit(host_vars))
    write_tree(tree, output_dir)
    secret = sum(1 for f in tree.values() if f.secret)
    typer.echo(f"rendered {len(tree)} files into {output_dir} ({secret} readable by owners only)")


@app.command("plan")
def plan_command(
    policy: PolicyArg,
    against: Annotated[
        Path, typer.Option("--against", help="A directory mirroring the host (or a render).")
    ],
    secrets: SecretsOpt = None,
    vault_password_file: VaultOpt = None,
    host_vars: HostVarsOpt = None,
    output: Annotated[PlanFormat, typer.Option("--format", help="Output format.")] = (
        PlanFormat.text
    ),
    force: Annotated[
        bool, typer.Option("--force", help="Allow a plan that rewrites most of the host.")
    ] = False,
    max_share: Annotated[
        float,
        typer.Option(
            "--max-change-share", help="Largest share of existing files a plan may touch."
        ),
    ] = DEFAULT_MAX_SHARE,
    runtime_from: Annotated[
        str | None,
        typer.Option(
            "--admin",
            help="Also show the run-time state a deploy keeps (suspended logins, pool "
            "addresses set by hand) of the postwarden-policyd at HOST:PORT.",
        ),
    ] = None,
) -> None:
    """Show what rendering would change against DIR, without writing anything."""
    loaded = _load_or_exit(policy, secrets, vault_password_file, OutputFormat.text)
    plan = make_plan(_render_or_exit(loaded, _host_or_exit(host_vars)), against)
    if runtime_from is not None:
        from dataclasses import replace

        from postwarden.render.plan import runtime_state

        suspensions = _admin_call(runtime_from, "/suspensions")
        pools = _admin_call(runtime_from, "/pools")
        try:
            state = runtime_state(runtime_from, suspensions, pools, loaded.policy)
        except (ValueError, KeyError, TypeError):
            typer.echo(f"{runtime_from} did not answer as postwarden-policyd does", err=True)
            raise typer.Exit(1) from None
        plan = replace(plan, runtime=state)
    formatter = {
        PlanFormat.text: as_text,
        PlanFormat.markdown: as_markdown,
        PlanFormat.json: as_json,
    }
    typer.echo(formatter[output](plan), nl=False)
    if plan.too_large(max_share) and not force:
        typer.echo(
            f"refusing: the plan changes or removes {plan.touched_existing} of "
            f"{plan.existing} existing files (more than {max_share:.0%}); "
            "review it and rerun with --force",
            err=True,
        )
        raise typer.Exit(1)


@app.command("policyd")
def policyd_command(
    settings_file: Annotated[
        Path | None, typer.Option("--settings", help="The daemon's settings file.")
    ] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="The policy file.")] = None,
    secrets: SecretsOpt = None,
    listen: Annotated[
        list[str] | None,
        typer.Option("--listen", help="HOST:PORT or unix:PATH; may be given more than once."),
    ] = None,
    log_file: Annotated[
        str | None, typer.Option("--log-file", help="Log here instead of standard error.")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Read the settings and the policy, then exit.")
    ] = False,
) -> None:
    """Run postwarden-policyd, Postfix's policy service."""
    from postwarden.policy.settings_file import load_settings_file
    from postwarden.policyd.daemon import run
    from postwarden.policyd.runtime import LoaderFailed, load_runtime
    from postwarden.policyd.settings import PolicydSettings

    try:
        settings = (
            load_settings_file(settings_file, PolicydSettings)
            if settings_file
            else PolicydSettings(log_file="")
        )
    except PolicyInvalid as invalid:
        _report_invalid(str(settings_file), invalid.problems, OutputFormat.text)
        raise typer.Exit(1) from None
    overrides: dict[str, object] = {}
    if policy is not None:
        overrides["policy"] = str(policy)
        overrides["secrets"] = str(secrets or policy.parent / "secrets.yml")
    if listen:
        overrides["listen"] = [_listen_or_exit(address) for address in listen]
    if log_file is not None:
        overrides["log_file"] = log_file
    settings = settings.model_copy(update=overrides)
    try:
        runtime = load_runtime(settings)
    except PolicyInvalid as invalid:
        _report_invalid(settings.policy, invalid.problems, OutputFormat.text)
        raise typer.Exit(1) from None
    except LoaderFailed as failed:
        typer.echo(f"error: {failed}", err=True)
        raise typer.Exit(1) from None
    if check:
        typer.echo(f"{settings_file or settings.policy}: ok")
        return
    run(settings, runtime)


def _listen_or_exit(address: str) -> str:
    from postwarden.policy.endpoints import parse_listen

    try:
        return parse_listen(address)
    except ValueError as error:
        typer.echo(f"--listen: {_message(error)}", err=True)
        raise typer.Exit(2) from None


def _message(error: ValueError) -> str:
    """A typed value's message and hint, as the policy's problems show them."""
    context = getattr(error, "context", None) or {}
    message = str(context.get("message", error))
    return f"{message} ({context['hint']})" if context.get("hint") else message


pool_app = typer.Typer(help="Outbound IP pools at run time, through postwarden-policyd.")
app.add_typer(pool_app, name="pool")
AdminOpt = Annotated[
    str | None,
    typer.Option("--admin", help="postwarden-policyd's HTTP address [default: from its settings]."),
]
UsageLogOpt = Annotated[
    str | None,
    typer.Option(help="postwarden-policyd's usage log [default: from its settings]."),
]


def _daemon_settings(path: Path | None = None) -> PolicydSettings:
    """The deployed daemon's settings (or those at ``path``), for the commands that
    find its files through them."""
    from postwarden.policy.settings_file import load_settings_file
    from postwarden.policyd.settings import SETTINGS_PATH, PolicydSettings

    if path is None and not Path(SETTINGS_PATH).exists():
        return PolicydSettings()
    path = path or Path(SETTINGS_PATH)
    try:
        return load_settings_file(path, PolicydSettings)
    except PolicyInvalid as invalid:
        _report_invalid(str(path), invalid.problems, OutputFormat.text)
        raise typer.Exit(1) from None


def _admin_token() -> str:
    """The operator's token, from a file only root and the daemon may read."""
    import os

    from postwarden.policyd.tokens import TOKENS_DIR

    path = Path(
        os.environ.get("POSTWARDEN_ADMIN_TOKEN_FILE")
        or Path(_daemon_settings().tokens_dir or TOKENS_DIR) / "admin"
    )
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError as error:
        typer.echo(
            f"cannot read the admin token at {path}: {error.strerror or error} "
            "(run as root, or set POSTWARDEN_ADMIN_TOKEN_FILE)",
            err=True,
        )
        raise typer.Exit(1) from None


def _admin_call(admin: str | None, path: str, body: dict[str, str] | None = None) -> object:
    import json
    import urllib.error
    import urllib.request

    address = admin or _daemon_settings().metrics_listen
    request = urllib.request.Request(
        f"http://{address}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {_admin_token()}"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = json.loads(error.read() or b"{}").get("error", error.reason)
        typer.echo(f"postwarden-policyd refused: {detail}", err=True)
    except (OSError, ValueError) as error:
        typer.echo(f"cannot reach postwarden-policyd at {address}: {error}", err=True)
    raise typer.Exit(1)


@pool_app.command("status")
def pool_status(admin: AdminOpt = None) -> None:
    """Show every pool address, its state in the policy and its state now."""
    states = _admin_call(admin, "/pools")
    assert isinstance(states, dict)
    for address, info in sorted(states.items()):
        note = "" if info["state"] == info["policy"] else f" (policy: {info['policy']})"
        typer.echo(f"{address:<40} {info['pool']:<16} {info['state']}{note}")


def _set_pool_state(address: str, state: str, admin: str | None) -> None:
    info = _admin_call(admin, f"/pools/{address}", {"state": state})
    assert isinstance(info, dict)
    typer.echo(f"{address} in pool {info['pool']} is now {info['state']}")


@pool_app.command("quarantine")
def pool_quarantine(address: str, admin: AdminOpt = None) -> None:
    """Stop new mail through ADDRESS now (Postfix follows within 30 s, no reload)."""
    _set_pool_state(address, "quarantined", admin)


@pool_app.command("drain")
def pool_drain(address: str, admin: AdminOpt = None) -> None:
    """Take no new mail through ADDRESS; what is queued for it still leaves."""
    _set_pool_state(address, "draining", admin)


@pool_app.command("activate")
def pool_activate(address: str, admin: AdminOpt = None) -> None:
    """Send through ADDRESS again."""
    _set_pool_state(address, "active", admin)


FAIL2BAN_SOCKET = "/run/fail2ban/fail2ban.sock"
ban_app = typer.Typer(help="Clients banned for abuse, on every host sharing the store.")
app.add_typer(ban_app, name="ban")


@ban_app.command("list")
def ban_list(admin: AdminOpt = None) -> None:
    """Show every client banned now, and for how much longer."""
    shown = _admin_call(admin, "/bans")
    assert isinstance(shown, dict)
    bans = shown["bans"]
    if not bans:
        typer.echo("no client is banned")
    for ban in bans:
        minutes, seconds = divmod(int(ban["seconds_left"]), 60)
        typer.echo(f"{ban['client']:<40} {minutes}m{seconds:02d}s left")


@ban_app.command("lift")
def ban_lift(address: str, admin: AdminOpt = None) -> None:
    """End ADDRESS's ban now: in the shared store (every host sharing it refuses it
    no more) and in this host's firewall (fail2ban)."""
    import shutil
    import subprocess

    lifted = _admin_call(admin, f"/bans/{address}", {"action": "lift"})
    assert isinstance(lifted, dict)
    typer.echo(
        f"{address}: ban lifted in postwarden-policyd's store"
        if lifted["lifted"]
        else f"{address}: not banned in postwarden-policyd's store"
    )
    fail2ban = shutil.which("fail2ban-client")
    if fail2ban is None or not Path(FAIL2BAN_SOCKET).exists():
        typer.echo(f"{address}: fail2ban does not run on this host")
        return
    unbanned = subprocess.run(
        [fail2ban, "unban", address], capture_output=True, text=True, check=False
    )
    if unbanned.returncode != 0:
        typer.echo(f"{address}: fail2ban-client unban failed: {unbanned.stderr.strip()}", err=True)
        raise typer.Exit(1)
    count = unbanned.stdout.strip() or "0"
    typer.echo(f"{address}: unbanned in {count} fail2ban jail(s) of this host")


moderation_app = typer.Typer(
    help="Mail in Postfix's hold queue: held list posts, throttled mail, outbound spam."
)
app.add_typer(moderation_app, name="moderation")


@moderation_app.command("list")
def moderation_list(
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = (
        OutputFormat.text
    ),
    usage_log: UsageLogOpt = None,
) -> None:
    """Show held messages: queue ID, sender, recipients, subject, and why."""
    from dataclasses import asdict

    from postwarden.moderation import held_line, list_held

    held = list_held(usage_log or _daemon_settings().usage_log)
    if output is OutputFormat.json:
        typer.echo(dumps([asdict(h) for h in held]))
        return
    for message in held:
        typer.echo(held_line(message))
    typer.echo(f"{len(held)} held")


QueueIds = Annotated[list[str], typer.Argument(help="Queue IDs from 'moderation list'.")]


@moderation_app.command("release")
def moderation_release(queue_ids: QueueIds) -> None:
    """Deliver held messages now."""
    from postwarden.moderation import NotHeld, release

    try:
        release(queue_ids)
    except NotHeld as error:
        typer.echo(f"not in the hold queue: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"released {len(queue_ids)}")


@moderation_app.command("delete")
def moderation_delete(queue_ids: QueueIds) -> None:
    """Delete held messages without delivering them."""
    from postwarden.moderation import NotHeld, delete

    try:
        delete(queue_ids)
    except NotHeld as error:
        typer.echo(f"not in the hold queue: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"deleted {len(queue_ids)}")


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    html = "html"


@app.command("report")
def report_command(
    kinds: Annotated[
        list[str] | None,
        typer.Argument(
            help="smtp_out_usage, outgoing_spam, abuse_detection.",
            metavar="[KIND]...",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="The last 7d, 24h, ... [default: 7d]", show_default=False)
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="From this date or time (local), e.g. 2026-12-01."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="To this date (its whole day) or time [default: now]."),
    ] = None,
    output: Annotated[ReportFormat, typer.Option("--format", help="Output format.")] = (
        ReportFormat.table
    ),
    usage_log: UsageLogOpt = None,
    postfix_log: Annotated[
        list[str] | None,
        typer.Option(
            help="Postfix's log, for smtp_out_connections; again for more (.gz too) "
            "[default: /var/log/postfix.log].",
            show_default=False,
        ),
    ] = None,
    to_file: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here, not to stdout.")
    ] = None,
    mail: Annotated[
        str | None,
        typer.Option(
            help="Make the policy's report NAME (its kinds, its schedule's period) and mail "
            "it to its channels through the notification relay.",
            metavar="NAME",
        ),
    ] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option(
            "--settings", help="postwarden-policyd's settings [default: the deployed ones]."
        ),
    ] = None,
    hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Only this MTA (again for more), of those sharing the Redis store.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Outbound usage, connections, outgoing spam and abuse rules tripped, for a period.

    With the Redis store, the usage rows and events are those of every MTA sharing it."""
    from postwarden.reports.make import (
        POSTFIX_LOG,
        UnknownKind,
        budgets_of,
        check_kinds,
        make_report,
        pool_transports,
    )
    from postwarden.reports.period import BadPeriod, period_of
    from postwarden.reports.postfix_log import PostfixLogUnreadable
    from postwarden.reports.progress import shown_on_terminal
    from postwarden.reports.shared import SharedUsageUnreadable
    from postwarden.reports.usage import UsageLogUnreadable

    settings = _daemon_settings(settings_file)
    usage = _usage_source(settings, usage_log, hosts or [])
    postfix_logs = postfix_log or [POSTFIX_LOG]
    try:
        if mail is None:
            check_kinds(kinds or [])
            if not kinds:
                raise UnknownKind("name the kinds to report on, or --mail a report of the policy")
        chosen = since is not None or start is not None or end is not None
        period = period_of(since, start, end) if chosen or mail is None else None
    except (UnknownKind, BadPeriod) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    if mail is not None:
        _mail_report(mail, kinds or [], period, usage, postfix_logs, settings)
        return
    assert period is not None
    try:
        policy = (
            _deployed_policy(settings)
            if {"smtp_out_connections", "smtp_out_usage"} & set(kinds or [])
            else None
        )
        with shown_on_terminal("bytes") as progress:
            report = make_report(
                kinds or [],
                period,
                usage,
                postfix_logs,
                pool_transports(policy) if policy is not None else None,
                budgets_of(policy) if policy is not None else None,
                progress,
            )
    except (UsageLogUnreadable, SharedUsageUnreadable) as error:
        typer.echo(f"error: cannot read the usage log: {error}", err=True)
        raise typer.Exit(1) from None
    except PostfixLogUnreadable as error:
        typer.echo(f"error: cannot read Postfix's log: {error}", err=True)
        raise typer.Exit(1) from None
    for note in report.notes:
        typer.echo(f"note: {visible(note)}", err=True)
    _write_report(report.tables, period, output, to_file)


def _usage_source(
    settings: PolicydSettings, usage_log: str | None, hosts: list[str]
) -> UsageSource:
    """The usage log given, or the MTAs' shared stream when they share a Redis store,
    or the host's own log."""
    from postwarden.reports.make import UsageSource

    if hosts and usage_log is not None:
        typer.echo("error: --host reads the MTAs' shared usage stream, not --usage-log", err=True)
        raise typer.Exit(1)
    if usage_log is None and settings.store == "redis" and settings.redis_url:
        return UsageSource(redis_url=settings.redis_url, hosts=tuple(hosts))
    if hosts:
        typer.echo("error: --host needs the Redis store the MTAs share", err=True)
        raise typer.Exit(1)
    return UsageSource(path=usage_log or settings.usage_log)


def _write_report(
    tables: list[Table], period: Period, output: ReportFormat, to_file: Path | None
) -> None:
    import time

    from postwarden.reports.html import as_html
    from postwarden.reports.output import as_csv, as_json, as_text

    if output is ReportFormat.html:
        made = time.strftime("%Y-%m-%d %H:%M %Z")
        text = as_html(tables, "postwarden report", period.describe(), made)
    else:
        render = {ReportFormat.table: as_text, ReportFormat.csv: as_csv, ReportFormat.json: as_json}
        text = render[output](tables)
    if to_file is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        to_file.write_text(text if text.endswith("\n") else text + "\n")


def _deployed_policy(settings: PolicydSettings) -> Policy | None:
    """The deployed policy when it can be read, for the names of the pools' transports
    and the throttles' limits; without it the report names transports and shows no
    throttle peaks."""
    secrets = settings.secrets if Path(settings.secrets).exists() else None
    try:
        return load_policy(settings.policy, secrets).policy
    except (PolicyInvalid, OSError) as error:
        why = (
            (errors(error.problems) or error.problems)[0].message
            if isinstance(error, PolicyInvalid)
            else str(error)
        )
        typer.echo(
            f"note: the deployed policy {settings.policy} cannot be read ({why}): transports "
            "are shown by name, and the throttles at their peak not at all",
            err=True,
        )
        return None


def _mail_report(
    name: str,
    kinds: list[str],
    period: Period | None,
    usage: UsageSource,
    postfix_logs: list[str],
    settings: PolicydSettings,
) -> None:
    """``report --mail NAME``: what the policy's report timers run."""
    from postwarden.policyd.notify import DeliveryFailed
    from postwarden.reports.mailing import CannotMail, mail_report
    from postwarden.reports.make import UnknownKind
    from postwarden.reports.postfix_log import PostfixLogUnreadable
    from postwarden.reports.shared import SharedUsageUnreadable
    from postwarden.reports.usage import UsageLogUnreadable

    if kinds:
        typer.echo("error: --mail makes the kinds its report includes; name none", err=True)
        raise typer.Exit(1)
    secrets = settings.secrets if Path(settings.secrets).exists() else None
    try:
        policy = load_policy(settings.policy, secrets).policy
    except PolicyInvalid as invalid:
        _report_invalid(settings.policy, invalid.problems, OutputFormat.text)
        raise typer.Exit(1) from None
    try:
        mailed = mail_report(policy, name, usage, period, postfix_logs)
    except (
        CannotMail,
        UnknownKind,
        UsageLogUnreadable,
        SharedUsageUnreadable,
        PostfixLogUnreadable,
        DeliveryFailed,
    ) as error:
        typer.echo(f"error: report {name}: {error}", err=True)
        raise typer.Exit(1) from None
    for note in mailed.report.notes:
        typer.echo(f"note: {visible(note)}", err=True)
    described = mailed.report.period.describe()
    if mailed.by is not None:
        typer.echo(f"report {name} ({described}): already mailed by {visible(mailed.by)}")
    else:
        typer.echo(f"report {name} ({described}) mailed to {', '.join(mailed.to)}")


@app.command("passwd")
def passwd_command(
    address: Annotated[str, typer.Argument(help="The user.", show_default=False)],
    policy: Annotated[
        Path, typer.Option("--policy", help="The policy file the user is in.")
    ] = Path("policy.yml"),
    secrets: SecretsOpt = None,
    vault_password_file: VaultOpt = None,
    stdin: Annotated[
        bool,
        typer.Option("--stdin", help="Read the password as one line from stdin, not a prompt."),
    ] = False,
) -> None:
    """Set a user's password: checked against password_policy, hashed in its scheme,
    written into the secrets file (kept encrypted when it is) with the time it was set."""
    from postwarden.accounts.passwd import Refused, account_of, change_password
    from postwarden.policy.load import default_secrets_path

    try:  # only errors: the policy's warnings are not this command's business
        loaded = load_policy(policy, secrets, vault_password_file)
    except PolicyInvalid as invalid:
        _report_invalid(str(policy), invalid.problems, OutputFormat.text)
        raise typer.Exit(1) from None
    try:
        account_of(loaded, address)  # before asking for a password
    except Refused as refused:
        typer.echo(f"error: {refused.reasons[0]}", err=True)
        raise typer.Exit(1) from None
    if stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        password = typer.prompt(
            f"New password for {address}", hide_input=True, confirmation_prompt=True
        )
    written = secrets or default_secrets_path(policy)
    try:
        account = change_password(loaded, address, password, written, vault_password_file)
    except Refused as refused:
        typer.echo("error: the password was not set:", err=True)
        for reason in refused.reasons:
            typer.echo(f"  - {reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"password of {account.address} set in {written}; deploy to make it live")


dns_app = typer.Typer(help="What the DNS says about the policy's domains and addresses.")
app.add_typer(dns_app, name="dns")


class DnsFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


@dns_app.command("check")
def dns_check_command(
    policy: PolicyArg,
    secrets: SecretsOpt = None,
    vault_password_file: VaultOpt = None,
    host_vars: HostVarsOpt = None,
    nameserver: Annotated[
        str | None,
        typer.Option(help="HOST or HOST:PORT of the DNS server to ask [default: the system's]."),
    ] = None,
    dkim_records: Annotated[
        Path | None,
        typer.Option(
            help="Where the DNS records of the deployed DKIM keys are kept (DOMAIN.SELECTOR"
            ".key.dns, as the rspamd role keeps them) [default: /var/lib/rspamd/dkim, "
            "when it exists]."
        ),
    ] = None,
    output: Annotated[DnsFormat, typer.Option("--format", help="Output format.")] = (
        DnsFormat.text
    ),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the checks that passed too.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for each answer.")] = 5.0,
) -> None:
    """Check MX, SPF, DKIM and DMARC of each domain, and PTR, forward DNS and
    blocklists of each pool address, against the policy. Exit 1 on any error."""
    from dataclasses import asdict

    from postwarden.deliverability.dns_check import (
        check_dns,
        dkim_record_text,
        format_markdown,
        format_text,
    )
    from postwarden.deliverability.lookups import Lookups
    from postwarden.render.rspamd import DKIM_KEY_DIR

    loaded = _load_or_exit(policy, secrets, vault_password_file, OutputFormat.text)
    host = _host_or_exit(host_vars)
    kept = dkim_records or Path(DKIM_KEY_DIR)
    deployed = {}
    for domain, settings in loaded.policy.domains.items():
        if settings.dkim_selector is None:
            continue
        record = kept / f"{domain}.{settings.dkim_selector}.key.dns"
        try:
            text = dkim_record_text(record.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if text is not None:
            deployed[(domain, settings.dkim_selector)] = text
    try:
        lookups = Lookups(nameserver or host.dnsbl_nameserver, timeout)
    except ValueError as error:
        typer.echo(f"--nameserver: {error}", err=True)
        raise typer.Exit(1) from None
    findings = check_dns(loaded.policy, lookups, list(host.dnsbl_zones), deployed)
    if output is DnsFormat.json:
        typer.echo(dumps([asdict(f) for f in findings]))
    elif output is DnsFormat.markdown:
        typer.echo(format_markdown(findings), nl=False)
    else:
        typer.echo(format_text(findings, verbose), nl=False)
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)


account_app = typer.Typer(
    help="Logins suspended at run time, on every host sharing the store: refused at "
    "SMTP (RCPT) and at login (IMAP, POP3, SMTP AUTH) until released."
)
app.add_typer(account_app, name="account")


def _since(moment: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(moment))


@account_app.command("status")
def account_status(
    address: Annotated[
        str | None, typer.Argument(help="One login [default: every suspended one].")
    ] = None,
    admin: AdminOpt = None,
) -> None:
    """Show the suspended logins, or whether ADDRESS is one."""
    shown = _admin_call(admin, "/suspensions")
    assert isinstance(shown, dict)
    suspended = {entry["login"]: entry["since"] for entry in shown["suspensions"]}
    if address is not None:
        login = address.lower()
        since = suspended.get(login)
        typer.echo(
            f"{login}: suspended since {_since(since)}"
            if since is not None
            else f"{login}: not suspended"
        )
        return
    if not suspended:
        typer.echo("no login is suspended")
    for login, since in suspended.items():
        # logins come from the store's key names: shown, never run by the terminal
        typer.echo(f"{visible(login):<40} suspended since {_since(since)}")


def _set_suspended(address: str, suspend: bool, admin: str | None) -> None:
    action = "suspend" if suspend else "release"
    from urllib.parse import quote

    done = _admin_call(admin, f"/suspensions/{quote(address, safe='@')}", {"action": action})
    assert isinstance(done, dict)
    login = done["login"]
    if suspend:
        typer.echo(f"{login}: suspended" if done["changed"] else f"{login}: already suspended")
    else:
        typer.echo(f"{login}: released" if done["changed"] else f"{login}: was not suspended")


@account_app.command("suspend")
def account_suspend(address: str, admin: AdminOpt = None) -> None:
    """Refuse ADDRESS's mail and logins now, on every host sharing the store, until
    released (no redeploy either way)."""
    _set_suspended(address, True, admin)


@account_app.command("release")
def account_release(address: str, admin: AdminOpt = None) -> None:
    """Accept ADDRESS's mail and logins again. Its mail put on hold stays held: see
    `postwarden moderation list`, then release or delete it."""
    _set_suspended(address, False, admin)


@account_app.command("contain")
def account_contain(admin: AdminOpt = None, usage_log: UsageLogOpt = None) -> None:
    """Put the suspended logins' mail still queued on this host on hold, and close
    their open IMAP and POP3 sessions (a root timer runs this on every mail host)."""
    from postwarden.accounts.containment import ContainFailed, contain

    shown = _admin_call(admin, "/suspensions")
    assert isinstance(shown, dict)
    suspended = [str(entry["login"]) for entry in shown["suspensions"]]
    try:
        done = contain(suspended, usage_log or _daemon_settings().usage_log)
    except ContainFailed as error:
        for login in error.kicked:
            typer.echo(f"{visible(login)}: closed its open sessions")
        typer.echo(f"cannot hold the suspended logins' queued mail: {error}", err=True)
        raise typer.Exit(1) from None
    for login, queue_ids in done.held.items():
        typer.echo(
            f"{visible(login)}: held {len(queue_ids)} queued message"
            f"{'s' if len(queue_ids) != 1 else ''}: {' '.join(queue_ids)}"
        )
    for login in done.kicked:
        typer.echo(f"{visible(login)}: closed its open sessions")


audit_app = typer.Typer(help="Audits of what is already deployed.")
app.add_typer(audit_app, name="audit")


class AuditFormat(StrEnum):
    table = "table"
    json = "json"


@audit_app.command("passwords")
def audit_passwords(
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="The policy [default: the deployed one, by its settings]."),
    ] = None,
    secrets: SecretsOpt = None,
    vault_password_file: VaultOpt = None,
    output: Annotated[AuditFormat, typer.Option("--format", help="Output format.")] = (
        AuditFormat.table
    ),
    common: Annotated[
        int,
        typer.Option(
            "--common", min=0, max=10_000, help="How many of the most common passwords to try."
        ),
    ] = DEFAULT_COMMON_TRIES,
    jobs: Annotated[
        int | None, typer.Option("--jobs", min=1, help="Tries at once [default: the cores].")
    ] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="postwarden-policyd's settings, for the deployed policy."),
    ] = None,
    passdb: Annotated[
        Path | None,
        typer.Option(
            "--passdb",
            help="Dovecot's passwd-file to take the hashes from [default on a host: "
            "the deployed one].",
        ),
    ] = None,
    notify: Annotated[
        bool,
        typer.Option(
            "--notify",
            help="On failures, raise password.audit_failed to its channels, and tell each "
            "user when audit.notify_users is set (what the audit timer runs).",
        ),
    ] = False,
) -> None:
    """Users with no password, a hash in another scheme, a password past max_age or
    of unknown age, or one of the most common or built from their own name; exit 1
    when any. Says how many guesses it will make, makes them on every core."""
    import os

    from postwarden.accounts.audit import guess, plan_audit
    from postwarden.reports.progress import shown_on_terminal

    # a policy given is audited as it is; without one, the deployed one is
    settings = _daemon_settings(settings_file) if policy is None else None
    loaded, held = _audited(policy, secrets, vault_password_file, settings, passdb)
    plan = plan_audit(loaded.policy, held, common)
    cores = jobs or os.cpu_count() or 1
    estimate = plan.tries * plan.seconds_per_try() / cores
    typer.echo(
        f"auditing {len(loaded.policy.users)} users: {plan.tries} guesses against "
        f"{len(plan.guessing)} hashes, about {estimate:.0f} s on {cores} cores",
        err=True,
    )
    with shown_on_terminal("tries") as progress:
        progress.stage("guessing", plan.tries)
        failures = plan.failures + guess(plan, jobs, progress.update)
    failures.sort(key=lambda f: (f.address, f.problem))
    _show_audit(failures, output)
    for soon in plan.expiring:
        typer.echo(f"note: the password of {soon.address} {soon.detail()}", err=True)
    if notify and (failures or plan.expiring):
        _notify_audit(loaded.policy, failures, settings, plan.expiring)
    if failures:
        raise typer.Exit(1)


def _audited(
    policy: Path | None,
    secrets: Path | None,
    vault_password_file: Path | None,
    settings: PolicydSettings | None,
    passdb: Path | None,
) -> tuple[LoadedPolicy, Secrets]:
    """The policy to audit and the secrets to audit it with. Without a policy, the
    deployed one, and the hashes from Dovecot's passdb: on a host the daemon's
    secrets file never holds them."""
    from dataclasses import replace

    from postwarden.accounts.audit import hashes_from_passdb
    from postwarden.render.dovecot import DATA_DIR

    if policy is None:
        assert settings is not None
        policy = Path(settings.policy)
        if secrets is None and Path(settings.secrets).exists():
            secrets = Path(settings.secrets)
        passdb = passdb or Path(f"{DATA_DIR}/passwords")
    try:
        loaded = load_policy(policy, secrets, vault_password_file)
    except PolicyInvalid as invalid:
        _report_invalid(str(policy), invalid.problems, OutputFormat.text)
        raise typer.Exit(1) from None
    if passdb is None:
        return loaded, loaded.secrets
    try:
        return loaded, replace(loaded.secrets, password_hashes=hashes_from_passdb(passdb))
    except OSError as error:
        typer.echo(f"error: cannot read the hashes in {passdb}: {error.strerror}", err=True)
        raise typer.Exit(1) from None


def _show_audit(failures: list[Failure], output: AuditFormat) -> None:
    if output is AuditFormat.json:
        typer.echo(
            dumps([{"user": f.address, "problem": f.problem, "detail": f.detail} for f in failures])
        )
        return
    if not failures:
        typer.echo("every password passes the audit")
        return
    from postwarden.reports.builders import Table
    from postwarden.reports.output import as_text

    table = Table(
        "Passwords that fail the audit",
        ("user", "problem", "detail"),
        [(f.address, f.problem, f.detail) for f in failures],
    )
    typer.echo(as_text([table]), nl=False)


def _notify_audit(
    policy: Policy,
    failures: list[Failure],
    settings: PolicydSettings | None,
    expiring: list[Expiring],
) -> None:
    """--notify; ``settings`` on a host, where the MTAs sharing Redis notify once."""
    import time

    from postwarden.accounts.audit_notify import notify

    now = time.time()
    holder = _audit_claim(policy, settings, now) if settings is not None else None
    if holder is not None:
        typer.echo(f"password.audit_failed already sent by {visible(holder)}", err=True)
        return
    sent = notify(policy, failures, now, expiring)
    for name in sent.channels:
        typer.echo(f"password.audit_failed sent to {name}", err=True)
    if sent.users:
        typer.echo(f"told {len(sent.users)} users: {', '.join(sent.users)}", err=True)
    if sent.warned:
        typer.echo(
            f"warned {len(sent.warned)} users of their password's expiry: {', '.join(sent.warned)}",
            err=True,
        )
    for problem in sent.failed:
        typer.echo(f"error: not sent: {problem}", err=True)


def _audit_claim(policy: Policy, settings: PolicydSettings, now: float) -> str | None:
    """When the MTAs share a Redis store, their audit timers fire together: the first
    to claim the schedule's period notifies, the others say who did."""
    from postwarden.reports.mailing import CannotMail, claim_period

    audit = policy.password_policy.audit
    if audit is None or settings.store != "redis" or not settings.redis_url:
        return None
    try:
        return claim_period(settings.redis_url, "postwarden:audit-notified:", audit.schedule, now)
    except CannotMail as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


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
