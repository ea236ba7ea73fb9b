"""postwarden-policyd: Postfix's policy service, enforcing what Postfix cannot alone."""
