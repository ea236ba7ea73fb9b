"""What the daemon keeps of the policy, loaded in a child process.

Validating a policy of 100,000 users builds a few hundred megabytes of models and
YAML nodes. Built in the daemon itself, most of that memory would stay with the
process after use (freed objects pin the allocator's arenas that the lookups kept
live in), and a reload would stop every reply for the seconds the load takes. So a
short-lived child process loads and validates the
policy and hands back, pickled over a pipe, only what the daemon uses: the lookups of
the policy view, and the policy without its users (events, notifications, pools,
lists, domains). Unpickled, that is a compact copy.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from postwarden.policy.load import PolicyInvalid, load_policy
from postwarden.policy.models import Policy
from postwarden.policy.problems import Problem
from postwarden.policyd.settings import PolicydSettings
from postwarden.policyd.view import PolicyView, compile_view

# by the module's own name (what it pickles must be found there, not in __main__);
# isolated (-I): no environment variables, no user site, not the working directory
CHILD = [sys.executable, "-I", "-c", "from postwarden.policyd.runtime import main; main()"]


@dataclass(frozen=True)
class Runtime:
    view: PolicyView
    policy: Policy
    """The policy without its users: what they need lives on in ``view``."""

    @property
    def hostname(self) -> str:
        return self.policy.server.hostname


class LoaderFailed(Exception):
    """The child process broke down (not a policy error): a bug or a lack of memory."""


def build_runtime(settings: PolicydSettings) -> Runtime:
    """Load, validate and compile in this process. Raises PolicyInvalid."""
    secrets = settings.secrets if Path(settings.secrets).exists() else None
    loaded = load_policy(settings.policy, secrets)
    policy = loaded.policy
    view = compile_view(policy, settings.mynetworks, loaded.secrets.password_set)
    return Runtime(view, policy.model_copy(update={"users": {}}))


def load_runtime(settings: PolicydSettings) -> Runtime:
    """``build_runtime`` in a child process. Raises PolicyInvalid or LoaderFailed."""
    done = subprocess.run(CHILD, input=pickle.dumps(settings), capture_output=True, check=False)
    return _outcome(done.returncode, done.stdout, done.stderr)


async def load_runtime_async(settings: PolicydSettings) -> Runtime:
    """``load_runtime`` without blocking the event loop while the child works."""
    child = await asyncio.create_subprocess_exec(
        *CHILD,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await child.communicate(pickle.dumps(settings))
    return _outcome(child.returncode or 0, out, err)


def _outcome(returncode: int, out: bytes, err: bytes) -> Runtime:
    if returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise LoaderFailed(f"loading the policy failed (exit {returncode}): {''.join(tail)}")
    # our own child's output over a pipe: trusted as much as this process itself
    outcome: Runtime | list[Problem] = pickle.loads(out)
    if isinstance(outcome, list):
        raise PolicyInvalid(outcome)
    return outcome


def main() -> None:
    settings: PolicydSettings = pickle.load(sys.stdin.buffer)
    outcome: Runtime | list[Problem]
    try:
        outcome = build_runtime(settings)
    except PolicyInvalid as invalid:
        outcome = invalid.problems
    sys.stdout.buffer.write(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
