"""``secureai dataset`` / ``secureai model``: exit codes, JSON output, one-line errors."""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secureai.cli.crypto_cmds import add_dataset_parser, add_model_parser, main

KEK = bytes(range(32))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, reason: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("secureai: ")
    assert reason in lines[0]
    assert "Traceback" not in err


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "kek.b64"
    path.write_bytes(base64.b64encode(KEK) + b"\n")
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "w").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "w" / "0.bin").write_bytes(b"\x01" * 1000)
    return root


def test_parsers_plug_into_a_host_cli() -> None:
    parser = argparse.ArgumentParser(prog="secureai")
    subs = parser.add_subparsers(dest="command", required=True)
    add_dataset_parser(subs)
    add_model_parser(subs)
    args = parser.parse_args(["dataset", "encrypt", "--key", "k", "a", "b"])
    assert callable(args.func)
    args = parser.parse_args(["model", "verify", "--model", "m", "--public-key", "p"])
    assert callable(args.func) and args.bundle is None


def test_dataset_file_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keyfile: Path
) -> None:
    src = tmp_path / "data.csv"
    src.write_bytes(b"a,b\n" * 1000)
    code, out, err = run(
        capsys, "dataset", "encrypt", "--key", str(keyfile), str(src), str(tmp_path / "d.enc")
    )
    assert (code, err) == (0, "")
    summary = json.loads(out)
    assert summary["bytes"] == 4000 and summary["files"] == 1
    assert str(KEK.hex()) not in out and base64.b64encode(KEK).decode() not in out
    code, out, err = run(
        capsys,
        "dataset",
        "decrypt",
        "--key",
        str(keyfile),
        str(tmp_path / "d.enc"),
        str(tmp_path / "plain.csv"),
    )
    assert code == 0
    assert (tmp_path / "plain.csv").read_bytes() == src.read_bytes()


def test_dataset_key_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECUREAI_KEK", base64.b64encode(KEK).decode())
    src, enc, out = tmp_path / "f", tmp_path / "e", tmp_path / "o"
    src.write_bytes(b"x" * 10)
    key = ["--key-env", "SECUREAI_KEK"]
    assert run(capsys, "dataset", "encrypt", *key, str(src), str(enc))[0] == 0
    assert run(capsys, "dataset", "decrypt", *key, str(enc), str(out))[0] == 0
    assert out.read_bytes() == b"x" * 10
    assert_one_line_error(
        *run(capsys, "dataset", "decrypt", "--key-env", "NOPE_UNSET", str(enc), "x"),
        "NOPE_UNSET is not set",
    )


def test_dataset_directory_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keyfile: Path, model: Path
) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    code, out, _ = run(capsys, "dataset", "encrypt", "--key", str(keyfile), str(model), str(enc))
    assert code == 0
    assert json.loads(out)["files"] == 2
    assert run(capsys, "dataset", "decrypt", "--key", str(keyfile), str(enc), str(dec))[0] == 0
    assert (dec / "w" / "0.bin").read_bytes() == b"\x01" * 1000


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("wrong-key", "wrong key"),
        ("tampered", "failed authentication"),
        ("truncated", "truncated"),
        ("missing-src", "source not found"),
        ("missing-key", "key file not found"),
        ("bad-key", "expected 32 raw bytes, or one line 'base64:"),
        ("not-envelope", "not a secureai envelope"),
        ("exists", "already exists"),
    ],
)
def test_dataset_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keyfile: Path, setup: str, reason: str
) -> None:
    src = tmp_path / "d"
    src.write_bytes(b"payload" * 100)
    enc = tmp_path / "d.enc"
    assert run(capsys, "dataset", "encrypt", "--key", str(keyfile), str(src), str(enc))[0] == 0
    key, target, dst = keyfile, enc, tmp_path / "out"
    if setup == "wrong-key":
        key = tmp_path / "other"
        key.write_bytes(bytes(32))
    elif setup == "tampered":
        blob = bytearray(enc.read_bytes())
        blob[-5] ^= 1
        enc.write_bytes(bytes(blob))
    elif setup == "truncated":
        enc.write_bytes(enc.read_bytes()[:100])
    elif setup == "missing-src":
        target = tmp_path / "nope"
    elif setup == "missing-key":
        key = tmp_path / "nokey"
    elif setup == "bad-key":
        key = tmp_path / "short"
        key.write_bytes(b"c2hvcnQ=")
    elif setup == "not-envelope":
        target = src
    elif setup == "exists":
        dst.write_bytes(b"keep")
    code, out, err = run(capsys, "dataset", "decrypt", "--key", str(key), str(target), str(dst))
    assert_one_line_error(code, out, err, reason)
    if setup != "exists":
        assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_dataset_keygen(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_path = tmp_path / "new.kek"
    code, out, _ = run(capsys, "dataset", "keygen", "--out", str(out_path))
    assert code == 0
    assert out_path.stat().st_mode & 0o777 == 0o600
    text = out_path.read_bytes()
    assert text.startswith(b"base64:") and text.endswith(b"\n") and text.count(b"\n") == 1
    assert len(base64.b64decode(text[len(b"base64:") : -1], validate=True)) == 32
    assert out_path.read_text().strip() not in out
    assert_one_line_error(
        *run(capsys, "dataset", "keygen", "--out", str(out_path)), "already exists"
    )


def test_model_keygen_sign_verify(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path
) -> None:
    sk, pk = tmp_path / "sk.pem", tmp_path / "pk.pem"
    code, out, _ = run(capsys, "model", "keygen", "--private-key", str(sk), "--public-key", str(pk))
    assert code == 0
    fp = json.loads(out)["fingerprint"]
    assert sk.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE" not in out.encode()
    code, out, _ = run(capsys, "model", "sign", "--model", str(model), "--private-key", str(sk))
    assert code == 0
    signed = json.loads(out)
    assert signed["bundle"] == str(model / "model.sig.json")
    code, out, err = run(capsys, "model", "verify", "--model", str(model), "--public-key", str(pk))
    assert (code, err) == (0, "")
    verified = json.loads(out)
    assert verified["digest"] == signed["digest"]
    assert verified["digest"].startswith("sha256:")
    assert verified["signer_fingerprint"] == fp

    (model / "w" / "0.bin").write_bytes(b"\x02" * 1000)
    assert_one_line_error(
        *run(capsys, "model", "verify", "--model", str(model), "--public-key", str(pk)),
        "modified: w/0.bin",
    )


def test_model_verify_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path
) -> None:
    sk, pk, other = tmp_path / "sk.pem", tmp_path / "pk.pem", tmp_path / "o.pem"
    run(capsys, "model", "keygen", "--private-key", str(sk), "--public-key", str(pk))
    run(
        capsys,
        "model",
        "keygen",
        "--private-key",
        str(tmp_path / "o.key"),
        "--public-key",
        str(other),
    )
    bundle = tmp_path / "sig.json"
    assert (
        run(
            capsys,
            "model",
            "sign",
            "--model",
            str(model),
            "--private-key",
            str(sk),
            "--bundle",
            str(bundle),
        )[0]
        == 0
    )
    verify = ["model", "verify", "--model", str(model), "--bundle", str(bundle)]
    assert_one_line_error(*run(capsys, *verify, "--public-key", str(other)), "wrong key")
    assert_one_line_error(
        *run(capsys, *verify, "--public-key", str(tmp_path / "nope")), "not found"
    )
    assert_one_line_error(
        *run(capsys, "model", "verify", "--model", str(model), "--public-key", str(pk)),
        "bundle not found",
    )
    bundle.write_text("{")
    assert_one_line_error(*run(capsys, *verify, "--public-key", str(pk)), "malformed bundle")
    assert_one_line_error(
        *run(capsys, "model", "sign", "--model", str(tmp_path / "none"), "--private-key", str(sk)),
        "model directory not found",
    )


def test_subprocess_exit_code_and_stderr(tmp_path: Path) -> None:
    """A real process: exit status 2 and a single line on stderr, never a traceback."""
    (tmp_path / "junk").write_bytes(b"not an envelope at all")
    (tmp_path / "k").write_bytes(KEK)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from secureai.cli.crypto_cmds import main; sys.exit(main())",
            "dataset",
            "decrypt",
            "--key",
            str(tmp_path / "k"),
            str(tmp_path / "junk"),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "secureai: not a secureai envelope (bad magic)\n"


def test_dataset_rekey(capsys: pytest.CaptureFixture[str], tmp_path: Path, keyfile: Path) -> None:
    new_key = tmp_path / "new.kek"
    assert run(capsys, "dataset", "keygen", "--out", str(new_key))[0] == 0
    src = tmp_path / "d"
    src.write_bytes(b"rotate me" * 50)
    enc = tmp_path / "d.enc"
    assert run(capsys, "dataset", "encrypt", "--key", str(keyfile), str(src), str(enc))[0] == 0
    rekey = ["dataset", "rekey", "--key", str(keyfile), "--new-key", str(new_key), str(enc)]
    code, out, _ = run(capsys, *rekey)
    assert code == 0 and json.loads(out)["rotated"] == 1
    assert_one_line_error(
        *run(capsys, "dataset", "decrypt", "--key", str(keyfile), str(enc), str(tmp_path / "x")),
        "wrong key",
    )
    code, _, _ = run(
        capsys, "dataset", "decrypt", "--key", str(new_key), str(enc), str(tmp_path / "y")
    )
    assert code == 0
    assert (tmp_path / "y").read_bytes() == src.read_bytes()
    assert_one_line_error(*run(capsys, *rekey[:-1], str(tmp_path / "none")), "not found")
