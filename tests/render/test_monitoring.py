"""Monitoring renderer: the files pass Prometheus's and Alertmanager's own checks, the
alerts fire when (and only when) the policy says, and each reaches its channels."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from postwarden.policy.load import LoadedPolicy, load_policy
from postwarden.policy.models import Policy
from postwarden.policy.models.events import QueueSizeEvent, SystemUsageEvent
from postwarden.render.host import HostSettings
from postwarden.render.monitoring import render_monitoring
from postwarden.render.tree import RenderedFile
from tests.conftest import EXAMPLE_INVENTORY, MINIMAL_POLICY, ROOT
from tests.render.conftest import SOURCE, write_files

PROMETHEUS_YML = "etc/prometheus/prometheus.yml"
RULES_YML = "etc/prometheus/rules/postwarden.yml"
ALERTMANAGER_YML = "etc/prometheus/alertmanager.yml"
BRIDGE = f"http://{HostSettings().policyd_metrics_listen}/alertmanager/"

WritePolicy = Callable[..., Path]

# Two queue.size and two system.disk events with different thresholds, windows and
# channels; an email channel through a relay whose login is not an address; a zero cooldown.
MEASURED_POLICY = """\
server:
  hostname: mail.example.com
  postmaster: ops@example.net
  notification_relay:
    host: smtp.relay.example.net
    port: 465
    username: alerts
    starttls: false
domains:
  example.com: {}
notifications:
  ops:
    email: [ops@example.net, oncall@example.net]
  chat:
    webhook:
      url: https://chat.example.net/hooks/mail
  pager:
    sms:
      gateway: https://sms.example.net/api/send
      to: "+15555550100"
events:
  - on: ip.blacklisted
    notify: [ops]
  - on: queue.size
    above: 100
    notify: [chat]
  - on: queue.size
    above: 1000
    for: 30m
    notify: [ops, pager]
  - on: system.disk
    above: 80%
    for: 15m
    notify: [chat]
  - on: system.disk
    above: 95%
    for: 2m
    cooldown: 0s
    notify: [pager, chat, ops]
  - on: system.memory
    above: 97.5%
    cooldown: 1h
    notify: [ops]
"""


# ------------------------------------------------------------------ helpers


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: scripts/setup --test installs Debian's "
            "prometheus and prometheus-alertmanager"
        )
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def render(loaded: LoadedPolicy) -> list[RenderedFile]:
    return render_monitoring(loaded.policy, loaded.secrets, HostSettings(), SOURCE)


def written(loaded: LoadedPolicy, root: Path) -> Path:
    return write_files(render(loaded), root)


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_config(root: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("promtool"), "check", "config", root / PROMETHEUS_YML)


def check_rules(root: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("promtool"), "check", "rules", root / RULES_YML)


def check_alertmanager(root: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("amtool"), "check-config", root / ALERTMANAGER_YML)


def measured(policy: Policy) -> list[tuple[int, QueueSizeEvent | SystemUsageEvent]]:
    return [
        (i, e)
        for i, e in enumerate(policy.events)
        if isinstance(e, QueueSizeEvent | SystemUsageEvent)
    ]


def rules_by_index(root: Path) -> dict[int, dict[str, Any]]:
    (group,) = read_yaml(root / RULES_YML)["groups"]
    rules = group["rules"]
    by_index = {int(r["labels"]["event_index"]): r for r in rules}
    assert len(by_index) == len(rules), "two rules share an event_index"
    return by_index


@pytest.fixture
def measured_loaded(write_policy: WritePolicy) -> LoadedPolicy:
    return load_policy(write_policy(MEASURED_POLICY))


@pytest.fixture(params=["example", "measured"])
def any_loaded(request: pytest.FixtureRequest, example: LoadedPolicy) -> LoadedPolicy:
    if request.param == "example":
        return example
    loaded: LoadedPolicy = request.getfixturevalue("measured_loaded")
    return loaded


# ---------------------------------------------------------------- validators


def test_example_passes_promtool_and_amtool(example: LoadedPolicy, tmp_path: Path) -> None:
    root = written(example, tmp_path / "tree")
    assert_ok(check_config(root))
    assert_ok(check_rules(root))
    assert_ok(check_alertmanager(root))


def test_rule_file_is_found_beside_the_config(example: LoadedPolicy, tmp_path: Path) -> None:
    root = written(example, tmp_path / "tree")
    config = read_yaml(root / PROMETHEUS_YML)
    (rule_file,) = config["rule_files"]
    assert not rule_file.startswith("/")
    assert (root / PROMETHEUS_YML).parent.joinpath(rule_file) == root / RULES_YML
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {
        "prometheus": ["127.0.0.1:9090"],
        "node": ["127.0.0.1:9100"],
        "alertmanager": ["127.0.0.1:9093"],
        "postwarden-policyd": [HostSettings().policyd_metrics_listen],
    }
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"
    ]


def _yaml_error(text: str) -> str:
    return text.replace("scrape_configs:", "scrape_configs: [")


def _bad_promql(text: str) -> str:
    data = yaml.safe_load(text)
    rule = data["groups"][0]["rules"][0]
    rule["expr"] = "sum(" + rule["expr"]
    return yaml.safe_dump(data)


def _unknown_key(text: str) -> str:
    data = yaml.safe_load(text)
    data["route"]["group_wiat"] = data["route"].pop("group_wait")
    return yaml.safe_dump(data)


def _unknown_receiver(text: str) -> str:
    data = yaml.safe_load(text)
    data["route"]["routes"][0]["receiver"] = "nobody"
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    ("broken_file", "breakage", "check"),
    [
        (PROMETHEUS_YML, _yaml_error, check_config),
        (RULES_YML, _bad_promql, check_rules),
        (RULES_YML, _bad_promql, check_config),  # check config reads the rule files too
        (ALERTMANAGER_YML, _unknown_key, check_alertmanager),
        (ALERTMANAGER_YML, _unknown_receiver, check_alertmanager),
    ],
)
def test_validators_reject_a_broken_copy(
    example: LoadedPolicy,
    tmp_path: Path,
    broken_file: str,
    breakage: Callable[[str], str],
    check: Callable[[Path], subprocess.CompletedProcess[str]],
) -> None:
    root = written(example, tmp_path / "tree")
    assert_ok(check(root))
    target = root / broken_file
    text = target.read_text(encoding="utf-8")
    broken = breakage(text)
    assert broken != text
    target.write_text(broken, encoding="utf-8")
    assert check(root).returncode != 0


@pytest.mark.parametrize(
    "text",
    [
        MINIMAL_POLICY,
        # channels and events, but none that Prometheus measures
        MINIMAL_POLICY
        + """\
notifications:
  chat:
    webhook:
      url: https://chat.example.net/hooks/mail
events:
  - on: ip.blacklisted
    notify: [chat]
  - on: message.large
    above: 10MiB
    notify: [chat]
""",
    ],
)
def test_policy_without_measured_events_passes_validators(
    write_policy: WritePolicy, tmp_path: Path, text: str
) -> None:
    loaded = load_policy(write_policy(text))
    root = written(loaded, tmp_path / "tree")
    assert_ok(check_config(root))
    assert_ok(check_rules(root))
    assert_ok(check_alertmanager(root))
    assert rules_by_index(root) == {}
    alertmanager = read_yaml(root / ALERTMANAGER_YML)
    assert alertmanager["receivers"] == [{"name": "null"}]
    assert alertmanager["route"]["receiver"] == "null"
    assert not alertmanager["route"].get("routes")


def test_policy_with_many_measured_events_passes_validators(
    measured_loaded: LoadedPolicy, tmp_path: Path
) -> None:
    root = written(measured_loaded, tmp_path / "tree")
    assert_ok(check_config(root))
    assert_ok(check_rules(root))
    assert_ok(check_alertmanager(root))


# --------------------------------------------------------------- alert rules


def test_one_rule_per_measured_event(any_loaded: LoadedPolicy, tmp_path: Path) -> None:
    root = written(any_loaded, tmp_path / "tree")
    rules = rules_by_index(root)
    events = measured(any_loaded.policy)
    assert sorted(rules) == [i for i, _ in events]
    for index, event in events:
        labels = rules[index]["labels"]
        assert labels == {"event": event.on, "event_index": str(index), "severity": "warning"}
        assert rules[index]["for"] == str(event.for_)
    assert len({r["alert"] for r in rules.values()}) == len(rules)


# Realistic series, as the exporters on a Debian host publish them.
NODE = {"instance": "127.0.0.1:9100", "job": "node"}
MEMORY_TOTAL = 8 * 1024**3
ROOT_FS = {"device": "/dev/vda1", "fstype": "ext4", "mountpoint": "/"}
PSEUDO_FS = [  # always full, never a disk to alert about
    {"device": "tmpfs", "fstype": "tmpfs", "mountpoint": "/run"},
    {"device": "/dev/loop0", "fstype": "squashfs", "mountpoint": "/snap/core/1"},
]
FS_SIZE = 50 * 1000**3
STEP = 60  # seconds between samples and between rule evaluations


def _series(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def input_series(event: QueueSizeEvent | SystemUsageEvent, level: float) -> dict[str, float]:
    """Series whose measured quantity (messages, percent used) is ``level``."""
    if isinstance(event, QueueSizeEvent):
        # spread over queues, so that only their sum crosses the threshold; held mail
        # (many messages here) waits for a moderator and is not counted
        active = int(level) // 2
        return {
            _series("postwarden_postfix_queue_messages", {**NODE, "queue": q}): n
            for q, n in (
                ("active", active),
                ("deferred", int(level) - active),
                ("incoming", 0),
                ("hold", 10 * (event.above + 1)),
            )
        }
    if event.on == "system.memory":
        return {
            _series("node_memory_MemTotal_bytes", NODE): MEMORY_TOTAL,
            _series("node_memory_MemAvailable_bytes", NODE): MEMORY_TOTAL * (100 - level) / 100,
        }
    series: dict[str, float] = {}
    for fs, used in ((ROOT_FS, level), *((p, 100.0) for p in PSEUDO_FS)):
        labels = {**NODE, **fs}
        series[_series("node_filesystem_size_bytes", labels)] = FS_SIZE
        series[_series("node_filesystem_avail_bytes", labels)] = FS_SIZE * (100 - used) / 100
    return series


def alert_labels(event: QueueSizeEvent | SystemUsageEvent) -> dict[str, str]:
    """The labels the alert keeps from its series (sum() keeps none)."""
    if isinstance(event, QueueSizeEvent):
        return {}
    return NODE if event.on == "system.memory" else {**NODE, **ROOT_FS}


def expected_summary(template: str, level: float, labels: dict[str, str]) -> str:
    """The summary as Prometheus renders it: the value is in it."""
    assert "$value" in template
    text = re.sub(r"\{\{ \$value \| humanize \}\}", f"{level:.4g}", template)
    text = re.sub(r"\{\{ \$value \}\}", f"{level:g}", text)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)


def levels(event: QueueSizeEvent | SystemUsageEvent) -> tuple[float, float]:
    """A level above the threshold, and one that is not (the threshold itself for counts)."""
    if isinstance(event, QueueSizeEvent):
        return event.above + 1, event.above
    return (event.above + 100) / 2, event.above / 2


def promtool_case(
    rule: dict[str, Any],
    event: QueueSizeEvent | SystemUsageEvent,
    level: float,
    eval_after: int,
    fires: bool,
) -> dict[str, Any]:
    samples = eval_after // STEP + 10
    labels = {**alert_labels(event), **rule["labels"]}
    expected = [
        {
            "exp_labels": labels,
            "exp_annotations": {
                "summary": expected_summary(rule["annotations"]["summary"], level, labels)
            },
        }
    ]
    return {
        "interval": f"{STEP}s",
        "input_series": [
            {"series": name, "values": f"{value:.3f}x{samples}"}
            for name, value in input_series(event, level).items()
        ],
        "alert_rule_test": [
            {
                "eval_time": f"{eval_after}s",
                "alertname": rule["alert"],
                "exp_alerts": expected if fires else [],
            }
        ],
    }


def promtool_tests(policy: Policy, root: Path) -> Path:
    rules = rules_by_index(root)
    cases = []
    for index, event in measured(policy):
        rule = rules[index]
        above, below = levels(event)
        assert event.for_ >= 2 * STEP, "the too-short case needs a window of two steps"
        cases += [
            promtool_case(rule, event, above, event.for_ + STEP, fires=True),
            promtool_case(rule, event, below, event.for_ + 5 * STEP, fires=False),
            promtool_case(rule, event, above, event.for_ - STEP, fires=False),
        ]
    assert cases, "the policy has no measured events to test"
    test_file = root / "rules_test.yml"
    document = {
        "rule_files": [str(root / RULES_YML)],
        "evaluation_interval": f"{STEP}s",
        "tests": cases,
    }
    test_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return test_file


def test_alerts_fire_above_threshold_for_longer_than_for_only(
    any_loaded: LoadedPolicy, tmp_path: Path
) -> None:
    root = written(any_loaded, tmp_path / "tree")
    assert_ok(run(tool("promtool"), "test", "rules", promtool_tests(any_loaded.policy, root)))


def _raise_thresholds(rule: dict[str, Any]) -> None:
    rule["expr"] += " * 10"  # binds tighter than >: the threshold, ten times higher


def _no_window(rule: dict[str, Any]) -> None:
    rule["for"] = "0s"


def _at_or_above(rule: dict[str, Any]) -> None:
    rule["expr"] = rule["expr"].replace(" > ", " >= ")


@pytest.mark.parametrize("mistake", [_raise_thresholds, _no_window, _at_or_above])
def test_rule_tests_catch_a_wrong_rule(
    example: LoadedPolicy, tmp_path: Path, mistake: Callable[[dict[str, Any]], None]
) -> None:
    root = written(example, tmp_path / "tree")
    test_file = promtool_tests(example.policy, root)
    document = read_yaml(root / RULES_YML)
    for rule in document["groups"][0]["rules"]:
        mistake(rule)
    (root / RULES_YML).write_text(yaml.safe_dump(document), encoding="utf-8")
    assert_ok(check_rules(root))
    assert run(tool("promtool"), "test", "rules", test_file).returncode != 0


# ------------------------------------------------------------------- routing


def routes_to(root: Path, labels: dict[str, str]) -> list[str]:
    result = run(
        tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={root / ALERTMANAGER_YML}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert_ok(result)
    return result.stdout.split()


def test_each_event_reaches_exactly_its_channels(any_loaded: LoadedPolicy, tmp_path: Path) -> None:
    policy = any_loaded.policy
    root = written(any_loaded, tmp_path / "tree")
    rules = rules_by_index(root)
    config = read_yaml(root / ALERTMANAGER_YML)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert len(receivers) == len(config["receivers"])
    assert receivers["null"] == {"name": "null"}
    relay = policy.server.notification_relay

    for index, event in measured(policy):
        rule = rules[index]
        (name,) = routes_to(root, {"alertname": rule["alert"], **rule["labels"]})
        receiver = receivers[name]
        emails = receiver.get("email_configs", [])
        webhooks = receiver.get("webhook_configs", [])
        channels = [policy.notifications[c] for c in event.notify]
        assert sorted(e["to"] for e in emails) == sorted(
            ", ".join(c.email) for c in channels if c.email is not None
        )
        assert sorted(w["url"] for w in webhooks) == sorted(
            BRIDGE + n for n in event.notify if policy.notifications[n].email is None
        )
        assert set(receiver) <= {"name", "email_configs", "webhook_configs"}
        for email in emails:
            assert relay is not None
            assert email["smarthost"] == f"{relay.host}:{relay.port}"
            assert email["require_tls"] is relay.starttls
            sender = relay.username if relay.username and "@" in relay.username else None
            assert email["from"] == (sender or policy.server.postmaster)
            logs_in = relay.username is not None and relay.password is not None
            assert ("auth_username" in email) is ("auth_password" in email) is logs_in

    # events Prometheus does not measure, and strangers, reach no one
    for index, unmeasured in enumerate(policy.events):
        if index not in rules:
            labels = {"event": unmeasured.on, "event_index": str(index)}
            assert routes_to(root, labels) == ["null"]
    assert routes_to(root, {"alertname": "Watchdog"}) == ["null"]


# ------------------------------------------------------------ secrets, bytes


def test_relay_password_only_in_private_files_and_no_sms_token(
    example: LoadedPolicy, tmp_path: Path
) -> None:
    secrets = example.secrets.values
    files = render(example)
    root = write_files(files, tmp_path / "tree")
    holding = [f for f in files if secrets["relay_password"] in f.content]
    assert holding, "the relay password is needed by alertmanager.yml"
    for rendered in files:
        on_disk = (root / rendered.path.lstrip("/")).stat().st_mode
        if rendered in holding:
            assert not rendered.mode & 0o004
            assert not on_disk & 0o004
        assert secrets["sms_token"] not in rendered.content


def _files(loaded: LoadedPolicy) -> list[tuple[str, str, int, str, str]]:
    return [(f.path, f.content, f.mode, f.owner, f.group) for f in render(loaded)]


def test_output_is_byte_identical_across_renders(any_loaded: LoadedPolicy) -> None:
    again = load_policy(any_loaded.policy_file)
    assert _files(any_loaded) == _files(again)


DIGEST = """\
import hashlib
from postwarden.policy.load import load_policy
from postwarden.render.host import HostSettings
from postwarden.render.monitoring import render_monitoring
loaded = load_policy({policy!r})
for f in render_monitoring(loaded.policy, loaded.secrets, HostSettings(), "policy.yml"):
    print(f.path, oct(f.mode), hashlib.sha256(f.content.encode()).hexdigest())
"""


def test_output_is_byte_identical_across_processes() -> None:
    """Different hash seeds reorder sets and dicts built from them: none may show."""
    code = DIGEST.format(policy=str(EXAMPLE_INVENTORY / "policy.yml"))
    outputs = []
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
            check=True,
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 3
