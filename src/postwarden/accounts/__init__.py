"""Accounts: the password policy where passwords are set and audited."""
