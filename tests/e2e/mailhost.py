"""A real mail host on this machine for end-to-end tests.

It renders a policy with postwarden, installs the files where the Debian
packages read them, and starts Postfix, Dovecot, rspamd, postwarden-policyd and
an SMTP sink (Postfix's smtp-sink) that stands for the Internet. The tests take
over this machine's mail configuration: run them on a machine or container that
is there for testing (CI is).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from postwarden.policy.load import load_policy
from postwarden.policy.models.domains import Domain
from postwarden.render.host import load_host_settings
from postwarden.render.render import render
from postwarden.render.tree import RenderedTree
from tests.conftest import ROOT

PASSWORDS = {
    "alice@example.com": "Tulip-Harbor-Quartz-17",
    "bob@example.org": "Maple-Ridge-Lantern-42",
    "newsletter@example.com": "Copper-Falcon-Meadow-93",
    "former@example.com": "Maple-Ridge-Lantern-42",
    "limited@example.com": "Maple-Ridge-Lantern-42",
    "bulky@example.com": "Maple-Ridge-Lantern-42",
    "stale@example.com": "Maple-Ridge-Lantern-42",
}
OUTSIDE = "127.0.0.9"
"""Tests connect from here: not in mynetworks, so the host treats it as the Internet."""
SINK_PORT = 2525
POSTFIX_LOG = Path("/var/log/postfix.log")
POLICYD_LOG = Path("/var/log/postwarden/policyd.log")
DOVECOT_LOG = Path("/var/log/dovecot.log")
TLS_DIR = Path("/etc/ssl/postwarden")
DKIM_DIR = Path("/var/lib/rspamd/dkim")


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check)


def _start_daemon(*command: str) -> None:
    """Start a program that puts itself in the background. Its output is not captured:
    a pipe held open by the daemon would make us wait for it forever."""
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def _ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        _run("groupadd", "--system", name)


def _ensure_user(name: str, home: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        _ensure_group(name)
        _run(
            "useradd",
            "--system",
            "--gid",
            name,
            "--home-dir",
            home,
            "--shell",
            "/usr/sbin/nologin",
            name,
        )


def wait_for_port(host: str, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


POLICYD = (
    sys.executable,
    "-m",
    "postwarden",
    "policyd",
    "--settings",
    "/etc/postwarden/policyd.yml",
)


@dataclass
class MailHost:
    policy: Path
    secrets: Path
    host_vars: Path
    workdir: Path
    tree: RenderedTree = field(default_factory=RenderedTree)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def sink_dir(self) -> Path:
        # smtp-sink runs as nobody, who cannot enter pytest's private temporary dirs
        return Path("/var/tmp/postwarden-e2e-sink")

    # ------------------------------------------------------------ set up

    def install(self) -> None:
        loaded = load_policy(self.policy, self.secrets)
        self.tree = render(loaded, load_host_settings(self.host_vars))
        _ensure_user("vmail", "/var/vmail")
        _ensure_user("postwarden", "/var/lib/postwarden")
        # a fresh host: no counters, bans or pool states left from an earlier run
        shutil.rmtree("/var/lib/postwarden", ignore_errors=True)
        _run("postsuper", "-d", "ALL", check=False)
        for rendered in self.tree.values():
            path = Path(rendered.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered.content, encoding="utf-8")
            os.chmod(path, rendered.mode)
            os.chown(path, pwd.getpwnam(rendered.owner).pw_uid, grp.getgrnam(rendered.group).gr_gid)
            if rendered.postmap:
                _run(rendered.postmap, f"hash:{path}")
        for directory, owner in (
            ("/var/vmail", "vmail"),
            ("/var/lib/postwarden", "postwarden"),
            ("/var/log/postwarden", "root"),
            (str(DKIM_DIR), "_rspamd"),
        ):
            Path(directory).mkdir(parents=True, exist_ok=True)
            shutil.chown(directory, owner, owner if owner != "root" else "root")
        self._tls()
        self._dkim(loaded.policy.domains)
        # the tokens of the daemon's HTTP callers, as the roles make them
        _run("sh", str(ROOT / "roles" / "postwarden_common" / "files" / "make-tokens"))
        for log in (POSTFIX_LOG, DOVECOT_LOG, POLICYD_LOG):
            log.touch()

    def _tls(self) -> None:
        TLS_DIR.mkdir(parents=True, exist_ok=True)
        crt, key = TLS_DIR / "mail.example.com.crt", TLS_DIR / "mail.example.com.key"
        if not crt.exists():
            _run(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=mail.example.com",
                "-keyout",
                str(key),
                "-out",
                str(crt),
            )
        os.chmod(key, 0o640)

    def _dkim(self, domains: Mapping[str, Domain]) -> None:
        for domain, settings in domains.items():
            selector = settings.dkim_selector
            if not selector:
                continue
            key = DKIM_DIR / f"{domain}.{selector}.key"
            if not key.exists():
                _run("rspamadm", "dkim_keygen", "-d", domain, "-s", selector, "-k", str(key))
            shutil.chown(key, "_rspamd", "_rspamd")

    # ------------------------------------------------------------- start

    def start(self) -> None:
        self.stop()
        shutil.rmtree(self.sink_dir, ignore_errors=True)
        self.sink_dir.mkdir(parents=True)
        shutil.chown(self.sink_dir, "nobody")
        self._spawn(
            "smtp-sink",
            "-u",
            "nobody",
            "-d",
            f"{self.sink_dir}/%Y%m%d%H%M%S.",
            f"127.0.0.1:{SINK_PORT}",
            "128",
        )
        self.start_policyd()
        _start_daemon("dovecot")
        self._spawn("rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd")
        _start_daemon("postfix", "start")
        for port in (SINK_PORT, 10040, 143, 11332, 25, 587, 465):
            wait_for_port("127.0.0.1", port, timeout=90)

    def start_policyd(self) -> None:
        self._spawn(*POLICYD)

    def kill_policyd(self) -> None:
        """As a crash would: SIGKILL, nothing written on the way out."""
        for process in [p for p in self.processes if p.args == POLICYD]:
            process.kill()
            process.wait(timeout=15)
            self.processes.remove(process)

    def _spawn(self, *command: str) -> None:
        self.processes.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def stop(self) -> None:
        _run("postfix", "stop", check=False)
        _run("doveadm", "stop", check=False)
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        _run("pkill", "-f", "rspamd: main process", check=False)

    # ------------------------------------------------------- mail helpers

    def submit(
        self,
        login: str | None,
        message: EmailMessage,
        port: int = 587,
        password: str | None = None,
        sender: str | None = None,
        recipients: list[str] | None = None,
        source: str = OUTSIDE,
    ) -> dict[str, tuple[int, bytes]]:
        """Send through the submission port with STARTTLS (or TLS on 465) and a login."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client: smtplib.SMTP
        if port == 465:
            client = smtplib.SMTP_SSL(
                "127.0.0.1", port, context=context, source_address=(source, 0), timeout=30
            )
        else:
            client = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30)
        with client:
            client.ehlo("client.remote.test")
            if port != 465:
                client.starttls(context=context)
                client.ehlo("client.remote.test")
            if login is not None:
                client.login(login, password or PASSWORDS[login])
            return client.send_message(message, from_addr=sender, to_addrs=recipients)

    def smtp25(
        self,
        message: EmailMessage,
        sender: str | None = None,
        recipients: list[str] | None = None,
        source: str = OUTSIDE,
    ) -> dict[str, tuple[int, bytes]]:
        """Deliver as another server on the Internet would: port 25, no login."""
        with smtplib.SMTP("127.0.0.1", 25, source_address=(source, 0), timeout=30) as client:
            client.ehlo("mx.remote.test")
            return client.send_message(message, from_addr=sender, to_addrs=recipients)

    # ---------------------------------------------------- what happened

    def log_mark(self, log: Path = POSTFIX_LOG) -> int:
        return log.stat().st_size

    def wait_for_log(
        self, text: str, since: int, log: Path = POSTFIX_LOG, timeout: float = 30.0
    ) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with log.open("rb") as handle:
                handle.seek(since)
                for line in handle.read().decode("utf-8", "replace").splitlines():
                    if text in line:
                        return line
            time.sleep(0.2)
        raise AssertionError(f"no log line with {text!r} in {log} within {timeout:.0f}s")

    def queue(self) -> list[dict[str, object]]:
        output = _run("postqueue", "-j").stdout
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def flush_queue(self) -> None:
        _run("postsuper", "-d", "ALL", check=False)

    def mailbox(self, address: str) -> list[bytes]:
        local, _, domain = address.partition("@")
        maildir = Path("/var/vmail") / domain / local / "Maildir"
        found = []
        for folder in ("new", "cur"):
            directory = maildir / folder
            if directory.is_dir():
                found += [p.read_bytes() for p in sorted(directory.iterdir())]
        return found

    def wait_for_mailbox(self, address: str, marker: str, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.mailbox(address):
                if marker.encode() in message:
                    return message
            time.sleep(0.2)
        raise AssertionError(f"no message with {marker!r} in {address}'s mailbox")

    def sunk(self) -> Iterator[bytes]:
        for path in sorted(self.sink_dir.iterdir()):
            yield path.read_bytes()

    def wait_for_sink(self, marker: str, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.sunk():
                if marker.encode() in message:
                    return message
            time.sleep(0.2)
        raise AssertionError(f"no message with {marker!r} reached the sink")


def message(sender: str, recipient: str, subject: str, body: str = "Hello.\n") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{subject.replace(' ', '-')}.{time.time_ns()}@remote.test>"
    mail["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    mail.set_content(body)
    return mail
