"""Render the whole tree of one host from a loaded policy."""

from __future__ import annotations

from pathlib import PurePath

from postwarden.policy.load import LoadedPolicy
from postwarden.render.dovecot import render_dovecot
from postwarden.render.fail2ban import render_fail2ban
from postwarden.render.host import HostSettings
from postwarden.render.monitoring import render_monitoring
from postwarden.render.policyd import render_policyd
from postwarden.render.postfix import render_postfix
from postwarden.render.reports import render_reports
from postwarden.render.rspamd import render_rspamd
from postwarden.render.tree import RenderedTree

RENDERERS = (
    render_postfix,
    render_dovecot,
    render_rspamd,
    render_fail2ban,
    render_monitoring,
)


def render(loaded: LoadedPolicy, host: HostSettings, source: str | None = None) -> RenderedTree:
    """Every file for the host. ``source`` names the policy in headers (default: its
    file name, so that the output does not depend on where the checkout lives)."""
    name = source or PurePath(loaded.policy_file).name
    tree = RenderedTree()
    for renderer in RENDERERS:
        tree.add(renderer(loaded.policy, loaded.secrets, host, name))
    tree.add(render_policyd(loaded.policy, loaded.secrets, host, name, loaded.policy_text))
    tree.add(render_reports(loaded.policy, name))
    return tree
