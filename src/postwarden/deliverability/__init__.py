"""Deliverability: what the DNS must say for mail from this server to be believed."""
