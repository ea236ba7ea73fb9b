"""Documentation of the postwarden.mail.render action (it runs on the controller only)."""

DOCUMENTATION = r"""
module: render
short_description: Render a mail host's configuration from a postwarden policy
description:
  - Loads and validates the policy on the controller with postwarden's own loader and
    renders the files of the host's roles (those of its inventory groups, or the roles
    asked for), once for the whole host.
  - Every file is also handed over for staging together, with the arguments of the one
    check of every service's new configuration that runs before any file goes live.
  - A policy with problems fails the task, listing every problem as FILE:LINE:COL.
  - Runs on the controller only; nothing is sent to the host.
version_added: 0.1.0
author: postwarden developers
options:
  policy:
    description: The policy file on the controller.
    type: path
    required: true
  secrets:
    description: The secrets file; secrets.yml beside the policy when not given.
    type: path
  vault_password_file:
    description: Password file for a vault-encrypted secrets file
      (default ANSIBLE_VAULT_PASSWORD_FILE).
    type: path
  host_settings:
    description: The host's settings (listen addresses, relayhost, policyd store ...),
      as documented in postwarden's README.
    type: dict
    default: {}
  roles:
    description: Only the files of these roles (policyd, rspamd, postfix, dovecot,
      fail2ban, monitoring); when empty, the roles of O(groups).
    type: list
    elements: str
    default: []
  groups:
    description: The host's inventory groups (mail, mx, submission, monitoring), which
      name its roles as site.yml runs them; every role when none of them is known.
    type: list
    elements: str
    default: []
  show_warnings:
    description: Show the policy's warnings (problems that do not stop it) as Ansible
      warnings; site.yml does so once per host, in the play that validates.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Render the files of the Postfix role
  postwarden.mail.render:
    policy: "{{ postwarden_policy_file }}"
    host_settings: "{{ postwarden_host_settings }}"
    roles: [postfix]
  register: rendered
"""

RETURN = r"""
roles:
  description: Per role, its files (public ones in C(files); C(secret_files), readable by
    their owners only), C(tables) to compile, C(directories), C(packages) and C(facts).
    The task result is not logged when there are secret files.
  type: dict
  returned: success
packages:
  description: The Debian packages of every role rendered.
  type: list
  returned: success
facts:
  description: hostname, tls (whether the host needs a certificate), tls_cert, tls_key,
    dkim_keys, dkim_key_dir, mail_root, vmail_user, log_files.
  type: dict
  returned: success
stage:
  description: Every file to stage (path, content), the staging directories, and
    check_args, the arguments of check-config --all.
  type: dict
  returned: success
problems:
  description: Every problem found, as FILE:LINE:COL lines.
  type: list
  returned: failure
"""
