"""Documentation of the postwarden.mail.render action (it runs on the controller only)."""

DOCUMENTATION = r"""
module: render
short_description: Render a mail host's configuration from a postwarden policy
description:
  - Loads and validates the policy on the controller with postwarden's own loader and
    renders the files of the requested services for the current host.
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
  services:
    description: Only the files of these services (postfix, dovecot, rspamd, fail2ban,
      prometheus, alertmanager, postwarden-policyd); all when empty.
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
- name: Render the Postfix files
  postwarden.mail.render:
    policy: "{{ postwarden_policy_file }}"
    host_settings: "{{ postwarden_host_settings }}"
    services: [postfix]
  register: rendered
"""

RETURN = r"""
files:
  description: Public files, each with path, content, mode, owner, group, service, postmap.
  type: list
  returned: success
secret_files:
  description: Files readable by their owners only; the task result is not logged when
    there are any.
  type: list
  returned: success
tables:
  description: Postfix lookup tables to compile, each with path and command.
  type: list
  returned: success
directories:
  description: Directories the files go into.
  type: list
  returned: success
facts:
  description: hostname, tls_cert, tls_key, dkim_keys, dkim_key_dir, mail_root, vmail_user,
    log_files.
  type: dict
  returned: success
problems:
  description: Every problem found, as FILE:LINE:COL lines.
  type: list
  returned: failure
"""
