"""The policy the Molecule `default` scenario deploys (molecule/shared/lab_policy.py): the
example inventory's, valid, with only the lab's relay, admins and thresholds changed. A
change to the example that the lab's edits no longer find fails here, not in Molecule."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from postwarden.policy.load import load_policy
from postwarden.policy.models.events import QueueSizeEvent, SystemUsageEvent
from tests.conftest import ROOT

EXAMPLE = ROOT / "inventories" / "example"


def _lab_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lab_policy", ROOT / "molecule" / "shared" / "lab_policy.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lab_policy_is_the_example_with_the_labs_relay_and_thresholds(
    tmp_path: Path,
) -> None:
    text = _lab_module().lab_policy((EXAMPLE / "policy.yml").read_text())
    (tmp_path / "policy.yml").write_text(text)
    lab = load_policy(tmp_path / "policy.yml", EXAMPLE / "secrets.yml").policy
    example = load_policy(EXAMPLE / "policy.yml", EXAMPLE / "secrets.yml").policy

    relay = lab.server.notification_relay
    assert relay is not None
    assert (relay.host, relay.port, relay.starttls, relay.password) == (
        "127.0.0.1",
        25,
        False,
        None,
    )
    assert lab.notifications["admins"].email == ["postmaster@example.com"]
    measured = {
        e.on: (e.above, str(e.for_))
        for e in lab.events
        if isinstance(e, QueueSizeEvent | SystemUsageEvent)
    }
    assert measured == {
        "queue.size": (3, "30s"),
        "system.memory": (1, "30s"),
        "system.disk": (1, "30s"),
    }
    # everything else is the example's
    for section in ("domains", "users", "lists", "throttles", "abuse", "ip_pools"):
        assert getattr(lab, section) == getattr(example, section), section
