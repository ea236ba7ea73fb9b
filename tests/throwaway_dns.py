"""A throwaway authoritative DNS server on loopback: NSD (Debian's nsd package),
serving zones written by the caller, on a free port, in a directory of its own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Nsd:
    directory: Path
    zones: Mapping[str, str]
    """Zone name -> zone file text (with its own $ORIGIN, SOA and NS)."""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        program = shutil.which("nsd") or shutil.which("nsd", path="/usr/sbin")
        if program is None:
            raise RuntimeError("nsd is missing: run scripts/setup --test")
        self.port = self.port or _free_port()
        lines = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.port}",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{self.directory}"',
            '  database: ""',
            f'  pidfile: "{self.directory}/nsd.pid"',
            f'  xfrdfile: "{self.directory}/xfrd.state"',
            f'  zonelistfile: "{self.directory}/zone.list"',
            f'  logfile: "{self.directory}/nsd.log"',
            "  server-count: 1",
            "remote-control:",
            "  control-enable: no",
        ]
        for name, text in self.zones.items():
            (self.directory / f"{name}.zone").write_text(text)
            lines += ["zone:", f"  name: {name}", f"  zonefile: {name}.zone"]
        config = self.directory / "nsd.conf"
        config.write_text("\n".join(lines) + "\n")
        checked = subprocess.run(
            [program.replace("/nsd", "/nsd-checkconf"), str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            raise RuntimeError(f"nsd-checkconf: {checked.stdout}{checked.stderr}")
        self.process = subprocess.Popen(
            [program, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_until_it_answers(next(iter(self.zones)))

    def _wait_until_it_answers(self, zone: str) -> None:
        deadline = time.monotonic() + 15
        question = dns.message.make_query(zone, "SOA")
        while True:
            try:
                answer = dns.query.udp(question, "127.0.0.1", port=self.port, timeout=0.5)
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    return
            except (OSError, dns.exception.Timeout):
                pass
            if self.process is not None and self.process.poll() is not None:
                log = (
                    (self.directory / "nsd.log").read_text(errors="replace")
                    if (self.directory / "nsd.log").exists()
                    else ""
                )
                raise RuntimeError(f"nsd stopped: {log}")
            if time.monotonic() > deadline:
                raise RuntimeError("nsd did not answer within 15 s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
