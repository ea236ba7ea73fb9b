"""Generate a large, valid, realistic policy for benchmarks.

    python -m bench.gen_policy --users 100000 --domains 10000 --lists 1000 -o DIR

writes DIR/policy.yml and DIR/secrets.yml. Every user has an alias, every
fifth a send_as grant, every tenth an own throttle; lists have twenty members
and two moderators; all sections of the policy appear. The output is
deterministic for the same arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

HEADER = """\
version: 1
server:
  hostname: mail.bench.example
  postmaster: postmaster@d0.bench.example
  message_size_limit: 50MiB
  tls:
    cert: /etc/ssl/postwarden/mail.crt
    key: /etc/ssl/postwarden/mail.key
  notification_relay:
    host: relay.bench.example
    username: alerts@d0.bench.example
    password: !secret relay_password
password_policy:
  min_length: 12
  max_age: 365d
  audit: {schedule: weekly, notify_users: true}
throttles:
  staff: {messages: 200/h, recipients: 1000/d, action: defer}
  bulk: {messages: 5000/h, action: defer}
  domain-default: {messages: 2000/h, bytes: 2GiB/d, action: defer}
  lists: {messages: 20/h, action: hold}
abuse:
  internal_spammer: {same_size_messages: 30, within: 10m, size_tolerance: 2%, action: hold}
  bad_smtp_sessions: {invalid_recipients: 10, auth_failures: 5, within: 10m, ban_for: 1h}
  outbound_spam: {add_header_score: 6, hold_score: 10, reject_score: 15}
ip_pools:
  main:
    helo: out.bench.example
    addresses:
      - address: 192.0.2.10
      - address: 192.0.2.11
        state: draining
  bulk:
    helo: bulk.bench.example
    addresses:
      - address: 192.0.2.20
    failover: main
notifications:
  admins: {email: [ops@d0.bench.example]}
  oncall: {sms: {gateway: "https://sms.bench.example/send", to: "+15555550100",
                 token: !secret sms_token}}
  chat: {webhook: {url: "https://chat.bench.example/hook"}}
events:
  - {on: abuse.internal_spammer, notify: [admins, oncall]}
  - {on: throttle.hit, notify: [admins], cooldown: 1h}
  - {on: message.large, above: 25MiB, notify: [chat]}
  - {on: queue.size, above: 500, for: 10m, notify: [admins, oncall]}
  - {on: system.disk, above: 90%, notify: [admins]}
reports:
  weekly-ops:
    include: [smtp_out_usage, smtp_out_connections, outgoing_spam, abuse_detection]
    schedule: weekly
    send_to: [admins]
"""


BENCH_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=1$JhIRdsyZzXCJNl1ipusBIA"
    "$+TU5upoXNfR+GBKB+S17/yixbSArLNq9ym4gXSCKyyU"
)


def domain(index: int) -> str:
    return f"d{index}.bench.example"


def user(index: int, domains: int) -> str:
    return f"user{index}@{domain(index % domains)}"


def policy_lines(users: int, domains: int, lists: int) -> Iterator[str]:
    yield HEADER
    yield "domains:\n"
    for d in range(domains):
        pool = "bulk" if d % 50 == 49 else "main"
        selector = "    dkim_selector: s2026\n" if d % 2 == 0 else ""
        yield f"  {domain(d)}:\n{selector}    throttle: domain-default\n    ip_pool: {pool}\n"
    yield "users:\n"
    for u in range(users):
        home = domain(u % domains)
        lines = [f"  {user(u, domains)}:\n", f"    name: Bench User {u}\n"]
        aliases = f"alias{u}@{home}" + (f", postmaster@{home}" if u < domains else "")
        lines.append(f"    aliases: [{aliases}]\n")
        if u % 5 == 0:
            lines.append(f"    send_as: [role{u}@{home}]\n")
        lines.append("    quota: 2GiB\n")
        if u % 10 == 0:
            lines.append("    throttle: staff\n")
        if u % 100 == 99:  # never a moderator: those are users n*20+1 and n*20+2
            lines.append("    disabled: true\n")
        yield "".join(lines)
    yield "lists:\n"
    for n in range(lists):
        members = ", ".join(user((n * 20 + k) % users, domains) for k in range(20))
        moderators = ", ".join(user((n * 20 + k) % users, domains) for k in (1, 2))
        yield (
            f"  list{n}@{domain(n % domains)}:\n"
            f"    members: [{members}]\n"
            f"    moderators: [{moderators}]\n"
            "    posting: members\n"
            "    priority: low\n"
            "    throttle: lists\n"
        )


def write(directory: Path, users: int, domains: int, lists: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "policy.yml"
    with policy.open("w", encoding="utf-8") as out:
        out.writelines(policy_lines(users, domains, lists))
    with (directory / "secrets.yml").open("w", encoding="utf-8") as out:
        out.write("relay_password: bench-relay-password\nsms_token: bench-sms-token\n")
        out.write("password_hashes:\n")
        # one real hash for everybody: hashing 100k passwords would time argon2, not postwarden
        out.writelines(f"  {user(u, domains)}: '{BENCH_HASH}'\n" for u in range(users))
    return policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=10_000)
    parser.add_argument("--lists", type=int, default=1_000)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    policy = write(args.output, args.users, args.domains, args.lists)
    print(f"wrote {policy} ({policy.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
