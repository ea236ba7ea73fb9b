"""rspamd: the spam score thresholds, DKIM signing, headers.

``abuse.outbound_spam`` sets rspamd's action thresholds: at ``hold_score`` rspamd
answers "quarantine", which Postfix turns into its hold queue. The thresholds
are global (local.d/actions.conf) rather than limited to logged-in senders
through the settings module, because rspamd 3.4 does not apply a quarantine
threshold from settings reliably: seen in tests, a score above it was passed
with a header, and a quarantine chosen there reached Postfix as a temporary
failure. So inbound mail meets the same thresholds, which stay close to
rspamd's defaults (add a header at 6, reject at 15) in the example policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwarden.policy.models import Policy
from postwarden.policy.secrets import Secrets
from postwarden.render import guard
from postwarden.render.host import HostSettings
from postwarden.render.templating import header, render_template
from postwarden.render.tree import RenderedFile

LOCAL_D = "/etc/rspamd/local.d"
DATA_DIR = "/etc/rspamd/postwarden"
DKIM_KEY_DIR = "/var/lib/rspamd/dkim"


@dataclass(frozen=True)
class Action:
    name: str
    score: float


def actions(policy: Policy) -> list[Action]:
    """The thresholds the policy sets; rspamd keeps its default for the others."""
    spam = policy.abuse.outbound_spam
    if spam is None:
        return []
    chosen = (
        ("reject", spam.reject_score),
        ("quarantine", spam.hold_score),
        ("add_header", spam.add_header_score),
    )
    return [Action(name, score) for name, score in chosen if score is not None]


def dkim_selectors(policy: Policy) -> list[tuple[str, str]]:
    return [
        (domain, settings.dkim_selector)
        for domain, settings in sorted(policy.domains.items())
        if settings.dkim_selector
    ]


def sign_networks(host: HostSettings) -> list[str]:
    """mynetworks in rspamd's notation: IPv6 without Postfix's brackets."""
    return guard.words(
        (network.replace("[", "").replace("]", "") for network in host.mynetworks),
        "rspamd sign_networks",
        '"',
    )


def render_rspamd(
    policy: Policy, secrets: Secrets, host: HostSettings, source: str
) -> list[RenderedFile]:
    selectors = dkim_selectors(policy)
    files = [
        RenderedFile(
            f"{LOCAL_D}/actions.conf",
            render_template("rspamd/actions.conf.j2", source, actions=actions(policy)),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/dkim_signing.conf",
            render_template(
                "rspamd/dkim_signing.conf.j2",
                source,
                enabled=bool(selectors),
                sign_networks=sign_networks(host),
                selector_map=f"{DATA_DIR}/dkim_selectors.map",
                key_path=f"{DKIM_KEY_DIR}/$domain.$selector.key",
            ),
            "rspamd",
        ),
        RenderedFile(
            f"{DATA_DIR}/dkim_selectors.map",
            header(source)
            + "".join(
                " ".join(guard.words((domain, selector), "the DKIM selector map")) + "\n"
                for domain, selector in selectors
            ),
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
