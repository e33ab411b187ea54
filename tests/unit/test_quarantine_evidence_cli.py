"""``secureai quarantine evidence``: bad input ends with exit 2 and one line, never a traceback;
files never land outside --out. (The export of a real bundle runs in
tests/integration/test_evidence.py.)"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from secureai.cli import quarantine_evidence as cli


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    code = args.func(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert code == 0 or (len(lines) == 1 and lines[0].startswith("secureai: ")), err
    return code, err.strip()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    return path


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    code, err = _run(["q", "--out", str(out), "--kubeconfig", "/nonexistent"], capsys)
    assert code == 2 and "not a folder" in err


def test_missing_kubeconfig_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(
        ["q", "--out", str(tmp_path / "o"), "--kubeconfig", str(tmp_path / "none")], capsys
    )
    assert code == 2 and "cannot load cluster credentials" in err


def test_unreachable_api_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _kubeconfig(tmp_path, f"https://127.0.0.1:{_closed_port()}")
    code, err = _run(["q", "--out", str(tmp_path / "o"), "--kubeconfig", str(config)], capsys)
    assert code == 2 and "API request failed" in err
    assert not (tmp_path / "o").exists()


def test_unreadable_public_key_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(cli.ExportError, match="cannot read public key"):
        cli._read_public_key(str(tmp_path / "missing.pub"))


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/passwd"])
def test_paths_leaving_out_are_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(cli.ExportError, match="escapes"):
        cli._write(out, {"ok": b"1", name: b"2"})
    assert not (tmp_path / "escape").exists()


def test_a_symlinked_folder_inside_out_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "ns").symlink_to(elsewhere)
    with pytest.raises(cli.ExportError, match="escapes"):
        cli._write(out, {"ns/cr.json": b"{}"})
    assert not any(elsewhere.iterdir())


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_bytes(b"mine")
    with pytest.raises(cli.ExportError, match="refusing to overwrite"):
        cli._write(out, {"a/b.json": b"1", "index.json": b"theirs"})
    assert (out / "index.json").read_bytes() == b"mine"
    assert not (out / "a").exists()  # refused before anything was written
