"""postwarden-policyd's files: its settings, the policy, and only the secrets it uses."""

from __future__ import annotations

import yaml

from postwarden.policy.load import LoadedPolicy
from postwarden.policyd.settings import SETTINGS_PATH, PolicydSettings
from postwarden.render.host import HostSettings
from postwarden.render.policyd import render_policyd
from postwarden.render.tree import RenderedFile
from tests.render.conftest import SOURCE


def files(example: LoadedPolicy, host: HostSettings) -> dict[str, RenderedFile]:
    rendered = render_policyd(example.policy, example.secrets, host, SOURCE, example.policy_text)
    return {f.path: f for f in rendered}


def test_the_settings_are_public_without_a_redis_password(example: LoadedPolicy) -> None:
    host = HostSettings(policyd_store="redis", redis_url="redis://10.0.0.5:6379/0")
    settings = files(example, host)[SETTINGS_PATH]
    assert settings.mode == 0o644
    assert not settings.secret


def test_a_redis_password_makes_the_settings_secret(example: LoadedPolicy) -> None:
    host = HostSettings(policyd_store="redis", redis_url="redis://:s3cret@10.0.0.5:6379/0")
    settings = files(example, host)[SETTINGS_PATH]
    assert settings.mode == 0o640
    assert settings.group == "postwarden"
    text = settings.content
    loaded = PolicydSettings.model_validate(yaml.safe_load(text))
    assert loaded.redis_url == "redis://:s3cret@10.0.0.5:6379/0"


def test_the_daemons_secrets_leave_out_the_password_hashes(example: LoadedPolicy) -> None:
    secrets = files(example, HostSettings())["/etc/postwarden/secrets.yml"]
    assert "$argon2" not in secrets.content
    assert secrets.mode == 0o640
