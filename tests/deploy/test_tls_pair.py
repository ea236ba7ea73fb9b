"""The roles' certificate step (roles/postwarden_common/files/tls-pair), run here with
the real openssl: a pair is made only when neither file exists, an existing key is
never written over, and a certificate and key that do not belong together are
refused with a reason."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "roles" / "postwarden_common" / "files" / "tls-pair"


def tls_pair(cert: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), str(cert), str(key), "mail.example.com"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def public_key_of_cert(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-pubkey", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_a_pair_is_made_when_neither_exists_and_the_key_is_private(tmp_path: Path) -> None:
    cert, key = tmp_path / "ssl" / "mail.crt", tmp_path / "ssl" / "mail.key"
    made = tls_pair(cert, key)
    assert made.returncode == 0, made.stderr
    assert made.stdout == "made\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "BEGIN CERTIFICATE" in cert.read_text()
    # nothing is left behind beside them
    assert sorted(p.name for p in cert.parent.iterdir()) == ["mail.crt", "mail.key"]


def test_a_matching_pair_is_left_as_it_is(tmp_path: Path) -> None:
    cert, key = tmp_path / "mail.crt", tmp_path / "mail.key"
    assert tls_pair(cert, key).returncode == 0
    before = (cert.read_bytes(), key.read_bytes())
    again = tls_pair(cert, key)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert (cert.read_bytes(), key.read_bytes()) == before


def test_an_existing_key_is_never_written_over(tmp_path: Path) -> None:
    cert, key = tmp_path / "mail.crt", tmp_path / "mail.key"
    assert tls_pair(cert, key).returncode == 0
    cert.unlink()
    kept = key.read_bytes()
    refused = tls_pair(cert, key)
    assert refused.returncode == 1
    assert "exists but" in refused.stderr
    assert key.read_bytes() == kept
    assert not cert.exists()


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "mail.crt", tmp_path / "mail.key"
    assert tls_pair(cert, key).returncode == 0
    key.unlink()
    refused = tls_pair(cert, key)
    assert refused.returncode == 1
    assert f"{key} does not" in refused.stderr
    assert not key.exists()


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "mail.crt", tmp_path / "mail.key"
    other_cert, other_key = tmp_path / "other.crt", tmp_path / "other.key"
    assert tls_pair(cert, key).returncode == 0
    assert tls_pair(other_cert, other_key).returncode == 0
    assert public_key_of_cert(cert) != public_key_of_cert(other_cert)
    refused = tls_pair(cert, other_key)
    assert refused.returncode == 1
    assert "do not belong together" in refused.stderr


def test_a_file_that_is_no_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "mail.crt", tmp_path / "mail.key"
    assert tls_pair(cert, key).returncode == 0
    cert.write_text("not a certificate\n")
    refused = tls_pair(cert, key)
    assert refused.returncode == 1
    assert "is not a PEM certificate" in refused.stderr


def test_check_mode_makes_nothing(tmp_path: Path) -> None:
    cert, key = tmp_path / "mail.crt", tmp_path / "mail.key"
    checked = subprocess.run(
        ["sh", str(SCRIPT), str(cert), str(key), "mail.example.com", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0
    assert checked.stdout == "made\n"
    assert not cert.exists()
    assert not key.exists()
