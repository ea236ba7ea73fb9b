"""Reports an administrator reads, made from postwarden-policyd's usage log."""
