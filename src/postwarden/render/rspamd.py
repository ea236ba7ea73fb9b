"""rspamd: the spam score thresholds, DKIM signing, headers.

Inbound and outbound mail meet different thresholds. Inbound mail (from anyone
else on port 25) keeps rspamd's own: a header at 6, reject at 15, and never the
hold queue, which would leave an administrator moderating other people's spam.
``abuse.outbound_spam`` applies only to logged-in senders and to the networks that
may relay (mynetworks), through two rules of rspamd's settings module.

rspamd 3.4 chooses an action from a list it sorts when the configuration loads: an
action that only a settings rule adds ("added new action ... due to settings") is
then out of order, and a score above its threshold was seen to get a lesser action,
depending on what the worker scanned before. So every action the outbound rules use
is also declared globally; "quarantine" (the hold) gets a score no message reaches.
The rules then hold or reject as they should, as tests/e2e prove with real mail.

What rspamd decides about outbound mail (a reject, a hold, a header) is posted to
postwarden-policyd by a rule of ours (local.d/rspamd.lua), with a token: the daemon
raises ``spam.outbound`` and records the verdict in the usage log. Verdicts on
inbound mail are never sent.

Greylisting is off, by choice: rspamd keeps its greylist in a Redis of its own,
which this project does not run, and greylisting delays the first mail of every
new correspondent; inbound spam is scored instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwarden.policy.models import Policy
from postwarden.policy.secrets import Secrets
from postwarden.policyd.spam import SYMBOLS_SENT
from postwarden.render import guard
from postwarden.render.host import HostSettings
from postwarden.render.templating import header, render_template
from postwarden.render.tree import RenderedFile

LOCAL_D = "/etc/rspamd/local.d"
DATA_DIR = "/etc/rspamd/postwarden"
DKIM_KEY_DIR = "/var/lib/rspamd/dkim"
VERDICT_TOKEN = f"{DATA_DIR}/policyd-token"
"""rspamd's token for the daemon, made on the host (make-tokens), never rendered."""


@dataclass(frozen=True)
class Action:
    name: str
    score: float


INBOUND_ACTIONS = (Action("reject", 15), Action("add_header", 6))
"""rspamd's own thresholds for inbound mail, written out."""
UNREACHED_SCORE = 10_000
"""Inbound's hold threshold: no message scores this. Written as an object, since
rspamd's configtest refuses a plain number above reject's."""


def outbound_actions(policy: Policy) -> list[Action]:
    """The thresholds the policy sets for outbound mail; the others are inbound's."""
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
    networks = sign_networks(host)
    files = [
        RenderedFile(
            f"{LOCAL_D}/actions.conf",
            render_template(
                "rspamd/actions.conf.j2",
                source,
                actions=INBOUND_ACTIONS,
                unreached=UNREACHED_SCORE,
            ),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/settings.conf",
            render_template(
                "rspamd/settings.conf.j2",
                source,
                actions=outbound_actions(policy),
                networks=networks,
            ),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/rspamd.lua",
            render_template(
                "rspamd/rspamd.lua.j2",
                source,
                comment="--",
                url=f"http://{host.policyd_metrics_listen}/rspamd",
                token_file=VERDICT_TOKEN,
                networks=networks,
                symbols=SYMBOLS_SENT,
            ),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/greylist.conf",
            render_template("rspamd/greylist.conf.j2", source),
            "rspamd",
        ),
        RenderedFile(
            f"{LOCAL_D}/dkim_signing.conf",
            render_template(
                "rspamd/dkim_signing.conf.j2",
                source,
                enabled=bool(selectors),
                sign_networks=networks,
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
