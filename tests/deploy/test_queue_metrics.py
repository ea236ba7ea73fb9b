"""The postfix role's queue counter (roles/postwarden_postfix/files/postfix-queue-metrics):
what it writes for the node exporter is valid exposition text (promtool reads it), it
counts messages in Postfix's hashed queue directories, and a reader never sees a half
written file. The e2e tests run it on a real Postfix spool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "roles" / "postwarden_postfix" / "files" / "postfix-queue-metrics"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


def count_queues(spool: Path, directory: Path) -> dict[str, int]:
    result = subprocess.run(
        ["sh", str(SCRIPT), str(spool), str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = (directory / "postfix_queue.prom").read_text()
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return {
        queue: int(count)
        for queue, count in re.findall(
            r'^postwarden_postfix_queue_messages\{queue="(\w+)"\} (\d+)$', text, re.MULTILINE
        )
    }


def test_each_queue_is_counted_through_its_hashed_directories(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for name in ("deferred/A/B1C2", "deferred/F/F00D", "deferred/F/F00E", "hold/77AA", "active/1"):
        (spool / name).parent.mkdir(parents=True, exist_ok=True)
        (spool / name).write_text("message")
    # the delivery logs of deferred mail are not messages
    (spool / "defer" / "A").mkdir(parents=True)
    (spool / "defer" / "A" / "B1C2").write_text("log")
    counts = count_queues(spool, tmp_path / "textfile")
    assert counts == {
        "maildrop": 0,
        "incoming": 0,
        "active": 1,
        "deferred": 3,
        "hold": 1,
        "corrupt": 0,
    }


def test_the_file_is_replaced_whole_and_nothing_else_is_left(tmp_path: Path) -> None:
    spool, directory = tmp_path / "spool", tmp_path / "textfile"
    (spool / "incoming").mkdir(parents=True)
    (spool / "incoming" / "1").write_text("message")
    assert count_queues(spool, directory)["incoming"] == 1
    (spool / "incoming" / "1").unlink()
    assert count_queues(spool, directory) == dict.fromkeys(QUEUES, 0)
    # written beside and moved into place: no temporary file stays for the collector
    assert [p.name for p in directory.iterdir()] == ["postfix_queue.prom"]
    assert oct((directory / "postfix_queue.prom").stat().st_mode & 0o777) == "0o644"
