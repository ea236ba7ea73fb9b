"""postwarden.mail.render: render a host's files from the policy, on the controller.

The renderer is postwarden's own (the same code as `postwarden render`), so the
files a play deploys are byte-identical to what the command line shows. A
policy with problems fails the task with every problem as FILE:LINE:COL, and
nothing reaches the host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

ARGUMENT_SPEC: dict[str, Any] = {
    "policy": {"type": "path", "required": True},
    "secrets": {"type": "path"},
    "vault_password_file": {"type": "path"},
    "host_settings": {"type": "dict", "default": {}},
    "roles": {"type": "list", "elements": "str", "default": []},
    "groups": {"type": "list", "elements": "str", "default": []},
    "show_warnings": {"type": "bool", "default": False},
}


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            from postwarden.deploy import DeployInvalid, DeployRequest, render_for_deploy
        except ImportError as error:
            result.update(
                failed=True,
                msg=f"postwarden is not importable by the Python that runs Ansible ({error}); "
                "install it there: pip install postwarden (or scripts/setup --deploy)",
            )
            return result
        host = (task_vars or {}).get("inventory_hostname", "?")
        vault = args["vault_password_file"] or os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")
        request = DeployRequest(
            policy=Path(args["policy"]),
            secrets=Path(args["secrets"]) if args["secrets"] else None,
            vault_password_file=Path(vault) if vault else None,
            host_settings=args["host_settings"],
            roles=tuple(args["roles"]),
            groups=tuple(args["groups"]),
        )
        try:
            rendered = render_for_deploy(request, host)
        except DeployInvalid as invalid:
            for line in invalid.lines:
                display.error(line, wrap_text=False)
            count = len(invalid.lines)
            result.update(
                failed=True,
                problems=invalid.lines,
                msg=f"{args['policy']}: {count} problem{'s' if count != 1 else ''}, "
                "nothing was changed",
            )
            return result
        warnings = rendered.pop("warnings")
        has_secrets = rendered.pop("has_secrets")
        if args["show_warnings"] and warnings:
            result["warnings"] = warnings
        result.update(changed=False, **rendered)
        if has_secrets:
            # the result carries password hashes and tokens: never print it
            result["_ansible_no_log"] = True
        return result
