"""rspamd: outbound spam thresholds for authenticated senders, DKIM signing, headers.

Inbound mail keeps rspamd's own thresholds. Mail from logged-in users is scored
against ``abuse.outbound_spam`` through the settings module: at ``hold_score``
rspamd answers "quarantine", which Postfix turns into its hold queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwarden.policy.models import Policy
from postwarden.policy.secrets import Secrets
from postwarden.render.host import HostSettings
from postwarden.render.templating import header, render_template
from postwarden.render.tree import RenderedFile

LOCAL_D = "/etc/rspamd/local.d"
DATA_DIR = "/etc/rspamd/postwarden"
DKIM_KEY_DIR = "/var/lib/rspamd/dkim"


@dataclass(frozen=True)
class Action:
    name: str
    score: str


def outbound_actions(policy: Policy) -> list[Action]:
    """The action thresholds for authenticated mail; absent ones are switched off."""
    spam = policy.abuse.outbound_spam
    if spam is None:
        return []

    def score(value: float | None) -> str:
        return "null" if value is None else f"{value:g}"

    return [
        Action("reject", score(spam.reject_score)),
        Action("quarantine", score(spam.hold_score)),
        Action('"add header"', score(spam.add_header_score)),
        Action('"rewrite subject"', "null"),
        Action("greylist", "null"),
        Action('"soft reject"', "null"),
    ]


def dkim_selectors(policy: Policy) -> list[tuple[str, str]]:
    return [
        (domain, settings.dkim_selector)
        for domain, settings in sorted(policy.domains.items())
        if settings.dkim_selector
    ]


def render_rspamd(
    policy: Policy, secrets: Secrets, host: HostSettings, source: str
) -> list[RenderedFile]:
    selectors = dkim_selectors(policy)
    files = [
        RenderedFile(
            f"{LOCAL_D}/settings.conf",
            render_template("rspamd/settings.conf.j2", source, actions=outbound_actions(policy)),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/dkim_signing.conf",
            render_template(
                "rspamd/dkim_signing.conf.j2",
                source,
                enabled=bool(selectors),
                selector_map=f"{DATA_DIR}/dkim_selectors.map",
                key_path=f"{DKIM_KEY_DIR}/$domain.$selector.key",
            ),
            "rspamd",
        ),
        RenderedFile(
            f"{DATA_DIR}/dkim_selectors.map",
            header(source) + "".join(f"{domain} {selector}\n" for domain, selector in selectors),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/milter_headers.conf",
            render_template("rspamd/milter_headers.conf.j2", source),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/options.inc",
            render_template(
                "rspamd/options.inc.j2", source, test_patterns=host.rspamd_test_patterns
            ),
            "rspamd",
        ),
    ]
    if not host.rspamd_fuzzy:
        files.append(
            RenderedFile(
                f"{LOCAL_D}/fuzzy_check.conf",
                render_template("rspamd/fuzzy_check.conf.j2", source),
                "rspamd",
            )
        )
    return files
