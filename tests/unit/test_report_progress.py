"""`postwarden report` shows its progress on a terminal, and nothing of it in a pipe
or a file a script reads."""

from __future__ import annotations

import gzip
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gen_postfix_log
from postwarden.reports.postfix_log import iter_deliveries
from tests.conftest import MINIMAL_POLICY

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    """Settings that name nothing on the machine running the tests."""
    deployed = tmp_path / "deployed.yml"
    deployed.write_text(MINIMAL_POLICY, encoding="utf-8")
    path = tmp_path / "policyd.yml"
    path.write_text(
        f"policy: {deployed}\nsecrets: {tmp_path / 'none-secrets.yml'}\n"
        f"usage_log: {tmp_path / 'none.sqlite'}\n",
        encoding="utf-8",
    )
    return path


def run_report(log: Path, settings: Path, terminal: bool) -> tuple[int, str, str]:
    """The report as a separate process, its stderr on a pseudo-terminal or a pipe."""
    return run_postwarden(
        [
            "report",
            "smtp_out_connections",
            "--postfix-log",
            str(log),
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-31",
            "--settings",
            str(settings),
            "--format",
            "json",
        ],
        terminal,
    )


def run_postwarden(args: list[str], terminal: bool) -> tuple[int, str, str]:
    """A postwarden command as a separate process, its stderr on a pseudo-terminal
    or a pipe."""
    command = [sys.executable, "-m", "postwarden", *args]
    environment = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    if not terminal:
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=environment)
        return done.returncode, done.stdout, done.stderr
    main, side = pty.openpty()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=side, env=environment, text=True
    )
    os.close(side)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        shown += chunk
    assert process.stdout is not None
    output = process.stdout.read()
    os.close(main)
    return process.wait(), output, shown.decode(errors="replace")


def test_a_bar_on_a_terminal_and_none_in_a_pipe(tmp_path: Path, settings: Path) -> None:
    log = tmp_path / "postfix.log"
    gen_postfix_log.write(log, lines=60000, days=2, seed=3)

    code, output, terminal = run_report(log, settings, terminal=True)
    assert code == 0, terminal
    assert "reading postfix.log" in ANSI.sub("", terminal)
    # the bar counts the bytes of the file, up to its size
    size_mb = log.stat().st_size / 1e6
    assert f"{size_mb:.1f}" in ANSI.sub("", terminal)

    code, piped, quiet = run_report(log, settings, terminal=False)
    assert code == 0, quiet
    assert quiet == ""
    assert piped == output, "the report is the same either way"


def test_progress_counts_the_bytes_read_of_a_compressed_log(tmp_path: Path) -> None:
    plain = tmp_path / "postfix.log"
    gen_postfix_log.write(plain, lines=60000, days=2, seed=3)
    packed = tmp_path / "postfix.log.1.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        seen: list[int] = []
        for _ in iter_deliveries(path, progress=seen.append):
            pass
        assert seen == sorted(seen), "progress only moves forward"
        assert seen[-1] == path.stat().st_size


def test_the_audit_counts_its_tries_not_bytes(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    (tmp_path / "secrets.yml").write_text(
        f'password_hashes:\n  zed@example.com: "{cheap.hash("Gl4cier-Moth-Ink#")}"\n'
    )
    policy = tmp_path / "policy.yml"
    policy.write_text(
        "server:\n  hostname: mail.example.com\n  postmaster: ops@example.net\n"
        "domains:\n  example.com: {}\nusers:\n  zed@example.com: {}\n"
    )
    code, _, terminal = run_postwarden(
        ["audit", "passwords", "--policy", str(policy), "--common", "5"], terminal=True
    )
    assert code == 0, terminal
    plain = ANSI.sub("", terminal)
    assert "guessing" in plain
    tries = re.findall(r"\b(\d+)/(\d+)\b", plain)
    assert tries, plain
    assert {total for _, total in tries} == {tries[-1][1]}
    assert " bytes" not in plain
    assert "kB" not in plain
