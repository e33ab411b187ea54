"""`secureai dataset scan|pseudonymize` and the dataset init container's command.

One generated dataset (text, CSV, JSON Lines, Parquet; plain and envelope-encrypted) with
planted values of every type, some straddling the scanner's 1 MiB read boundaries and line
breaks: scan must find each one and print none; pseudonymize must replace each one and keep
every other byte.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasetgen import KINDS, PEM, Planted, text_with, value
from secureai.api import Policy, SecureTrainingJob, parse_workload
from secureai.cli.main import main
from secureai.crypto import decrypt_file, encrypt_file, generate_kek, load_kek
from secureai.dataset.detect import build
from secureai.dataset.files import READ_SIZE
from secureai.pii import TYPES, detect, iban_ok, luhn_ok
from secureai.render import render
from secureai.render.training import dataset_census

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

MIB = 1 << 20


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """plain/ and enc/ trees with the same files; ``planted`` maps file -> planted values."""
    rng = random.Random(17)
    root = tmp_path_factory.mktemp("ds")
    plain, enc = root / "plain", root / "enc"
    (plain / "sub").mkdir(parents=True)
    planted: dict[str, list[Planted]] = {}

    big, planted["big.txt"] = text_with(rng, 3 * MIB + 4096, 20000, (READ_SIZE, 2 * READ_SIZE))
    # A private key over several lines, straddling the third read boundary (inserted at a line
    # start after every other planted value, so no offset moves).
    pem_at = big.rindex(b"\n", 0, 3 * READ_SIZE - 100)
    assert pem_at + 1 < 3 * READ_SIZE < pem_at + 1 + len(PEM)
    assert all(p.offset < pem_at for p in planted["big.txt"])
    big = big[:pem_at] + b"\n" + PEM.encode() + big[pem_at:]
    planted["big.txt"].append(Planted("secret", PEM, pem_at + 1))
    (plain / "big.txt").write_bytes(big)

    rows = ["id,name,contact,note"]
    csv_planted: list[Planted] = []
    text = "\n".join(rows) + "\n"
    for i in range(60):
        kind = KINDS[i % len(KINDS)]
        v = value(kind, rng, i)
        prefix = f'{i},row{i},"multi\nline '
        csv_planted.append(Planted(kind, v, len(text.encode()) + len(prefix)))
        text += f'{prefix}{v}",ok\n'
    (plain / "sub" / "people.csv").write_text(text)
    planted["sub/people.csv"] = csv_planted

    lines = []
    jl_planted: list[Planted] = []
    pos = 0
    for i in range(40):
        kind = KINDS[(i + 3) % len(KINDS)]
        v = value(kind, rng, 1000 + i)
        head = json.dumps({"id": i, "text": "hello "})[:-2]
        line = f'{head} {v}"}}'
        jl_planted.append(Planted(kind, v, pos + len(head) + 1))
        lines.append(line)
        pos += len(line) + 1
    (plain / "chat.jsonl").write_text("\n".join(lines) + "\n")
    planted["chat.jsonl"] = jl_planted

    cells = [f"note {value(KINDS[i % len(KINDS)], rng, 2000 + i)} end" for i in range(30)]
    table = pa.table({"id": list(range(30)), "note": cells, "n": [1.5] * 30})
    pq.write_table(table, plain / "table.parquet")
    planted["table.parquet"] = [
        Planted(KINDS[i % len(KINDS)], c[5:-4], i) for i, c in enumerate(cells)
    ]  # offset: the row

    (plain / "blob.bin").write_bytes(b"\x00\x01binary" * 100)

    kek = generate_kek()
    key = root / "kek"
    key.write_bytes(kek)
    for path in sorted(plain.rglob("*")):
        if path.is_file():
            target = enc / path.relative_to(plain)
            target.parent.mkdir(parents=True, exist_ok=True)
            encrypt_file(path, target, kek, chunk_size=64 << 10)
    pkey, pkey2 = root / "p1.key", root / "p2.key"
    pkey.write_bytes(os.urandom(32))
    pkey2.write_bytes(os.urandom(32))
    return {
        "root": root,
        "plain": plain,
        "enc": enc,
        "kek": kek,
        "key": key,
        "pkey": pkey,
        "pkey2": pkey2,
        "planted": planted,
    }


def _all_values(ds: dict[str, Any]) -> list[str]:
    return [p.value for ps in ds["planted"].values() for p in ps]


def _check_census(census: dict[str, Any], ds: dict[str, Any], encrypted: bool) -> None:
    files = {f["path"]: f for f in census["files"]}
    assert files["blob.bin"]["error"].startswith("binary data")
    for name, planted in ds["planted"].items():
        f = files[name]
        assert f["encrypted"] is encrypted
        want: dict[str, int] = {}
        for p in planted:
            want[p.type] = want.get(p.type, 0) + 1
        assert f["counts"] == dict(sorted(want.items())), name
        if name.endswith(".parquet"):
            found = {(loc["row"], loc["type"]) for loc in f["locations"]}
            assert found == {(p.offset, p.type) for p in planted}
        else:
            found = {(loc["offset"], loc["type"], loc["length"]) for loc in f["locations"]}
            assert found == {(p.offset, p.type, len(p.value)) for p in planted}, name
    totals = census["totals"]
    assert totals["findings"] == sum(len(p) for p in ds["planted"].values())
    assert totals["unreadable"] == 1


@pytest.mark.parametrize("encrypted", [False, True])
def test_scan_finds_every_planted_value_and_prints_none(
    dataset: dict[str, Any], capsys: pytest.CaptureFixture[str], encrypted: bool
) -> None:
    tree = dataset["enc" if encrypted else "plain"]
    argv = ["dataset", "scan", "-o", "json", "--max-locations", "100000", str(tree)]
    if encrypted:
        argv[2:2] = ["--key", str(dataset["key"])]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    _check_census(json.loads(out), dataset, encrypted)
    code, table, _ = run(argv[:2] + [a for a in argv[2:] if a not in ("-o", "json")], capsys)
    assert code == 0
    for v in _all_values(dataset):
        assert v not in out and v not in table and v not in err
    assert "big.txt" in table and "unreadable" in table


def test_scan_line_numbers_and_locations_cap(
    dataset: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = dataset["plain"] / "sub" / "people.csv"
    code, out, _ = run(["dataset", "scan", "-o", "json", "--max-locations", "3", str(path)], capsys)
    assert code == 0
    (f,) = json.loads(out)["files"]
    data = path.read_bytes()
    assert len(f["locations"]) == 3 and f["locations_truncated"] is True
    for loc in f["locations"]:
        assert loc["line"] == data.count(b"\n", 0, loc["offset"]) + 1


def test_encrypted_scan_without_key_is_reported_not_skipped(
    dataset: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["dataset", "scan", "-o", "json", str(dataset["enc"])], capsys)
    assert code == 0
    census = json.loads(out)
    assert census["totals"]["unreadable"] == census["totals"]["files"]
    assert all("pass --key" in f["error"] for f in census["files"])


def _pseudonymize(ds: dict[str, Any], src: Path, dst: Path, key: Path, *extra: str) -> int:
    argv = ["dataset", "pseudonymize", "--pseudonym-key", str(key), *extra, str(src), str(dst)]
    return main(argv)


def _mapping(before: bytes, after: bytes, planted: list[Planted]) -> dict[str, str]:
    """Pseudonym of each planted value, checking every other byte is unchanged."""
    out: dict[str, str] = {}
    cur_b = cur_a = 0
    for p in sorted(planted, key=lambda p: p.offset):
        gap = p.offset - cur_b
        assert after[cur_a : cur_a + gap] == before[cur_b : p.offset]
        cur_a += gap
        rest_b = before[p.offset + len(p.value) :]
        # The pseudonym ends where the unchanged remainder of the line starts.
        tail = rest_b[:8]
        end = after.index(tail, cur_a) if tail else len(after)
        out[p.value] = after[cur_a:end].decode()
        cur_a, cur_b = end, p.offset + len(p.value)
    assert after[cur_a:] == before[cur_b:]
    return out


def _check_shape(kind: str, real: str, fake: str) -> None:
    assert fake != real
    if kind == "payment_card":
        digits = fake.replace(" ", "")
        assert len(digits) == len(real.replace(" ", "")) and digits.isdigit()
        assert not luhn_ok(digits)
        assert [i for i, c in enumerate(fake) if c == " "] == [
            i for i, c in enumerate(real) if c == " "
        ]
    elif kind == "email":
        local, _, domain = fake.partition("@")
        assert local and domain.endswith(".invalid") and "@" not in domain
    elif kind == "us_ssn":
        assert len(fake) == len(real) and fake[3] == "-" and fake.startswith("9")
    elif kind == "iban":
        assert len(fake) == len(real) and fake[:2] == real[:2]
        assert not iban_ok(fake.replace(" ", ""))
    elif kind == "phone":
        assert len(fake) == len(real) and fake.startswith("+0")


def test_pseudonymize_replaces_every_value_keeps_every_other_byte(
    dataset: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = dataset["plain"]
    (tmp_path / "in").mkdir()
    for name in ("big.txt", "chat.jsonl"):
        (tmp_path / "in" / name).write_bytes((src / name).read_bytes())
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "people.csv").write_bytes((src / "sub" / "people.csv").read_bytes())
    assert _pseudonymize(dataset, tmp_path / "in", tmp_path / "a", dataset["pkey"]) == 0
    assert _pseudonymize(dataset, tmp_path / "in", tmp_path / "b", dataset["pkey"]) == 0
    assert _pseudonymize(dataset, tmp_path / "in", tmp_path / "c", dataset["pkey2"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["replaced"] == sum(
        len(dataset["planted"][n]) for n in ("big.txt", "chat.jsonl", "sub/people.csv")
    )
    for name in ("big.txt", "chat.jsonl", "sub/people.csv"):
        before = (tmp_path / "in" / name).read_bytes()
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()  # deterministic under one key
        planted = dataset["planted"][name]
        m_a = _mapping(before, a, planted)
        m_c = _mapping(before, (tmp_path / "c" / name).read_bytes(), planted)
        for p in planted:
            assert p.value.encode() not in a
            assert m_a[p.value] != m_c[p.value]  # another key, another pseudonym
            if p.type != "secret":
                _check_shape(p.type, p.value, m_a[p.value])
    code, out, _ = run(["dataset", "scan", "-o", "json", str(tmp_path / "a")], capsys)
    assert code == 0 and json.loads(out)["totals"]["findings"] == 0  # scans clean


def test_pseudonymize_same_value_same_pseudonym_across_files(
    tmp_path: Path, dataset: dict[str, Any]
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1.txt").write_text("to ann.lee@example.com today\n")
    (tmp_path / "in" / "2.csv").write_text("x,ann.lee@example.com,y\n")
    assert _pseudonymize(dataset, tmp_path / "in", tmp_path / "out", dataset["pkey"]) == 0
    one = (tmp_path / "out" / "1.txt").read_text().split()[1]
    two = (tmp_path / "out" / "2.csv").read_text().split(",")[1]
    assert one == two and one.endswith(".invalid")


def test_pseudonymize_encrypted_gives_encrypted_and_parquet(
    dataset: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = dataset["enc"]
    src = tmp_path / "in"
    src.mkdir()
    for name in ("table.parquet", "chat.jsonl"):
        (src / name).write_bytes((enc / name).read_bytes())
    new = tmp_path / "new.kek"
    new.write_bytes(generate_kek())
    args = ("--key", str(dataset["key"]), "--new-key", str(new))
    assert _pseudonymize(dataset, src, tmp_path / "out", dataset["pkey"], *args) == 0
    with pytest.raises(Exception, match="wrong key"):
        decrypt_file(tmp_path / "out" / "chat.jsonl", tmp_path / "x", dataset["kek"])
    decrypt_file(tmp_path / "out" / "table.parquet", tmp_path / "t.parquet", load_kek(new))
    before = pq.read_table(dataset["plain"] / "table.parquet")
    after = pq.read_table(tmp_path / "t.parquet")
    assert after.schema == before.schema and after.column("id") == before.column("id")
    cells = after.column("note").to_pylist()
    for cell, p in zip(cells, dataset["planted"]["table.parquet"], strict=True):
        assert p.value not in cell and cell.startswith("note ") and cell.endswith(" end")
    capsys.readouterr()
    code, out, _ = run(
        ["dataset", "scan", "-o", "json", "--key", str(new), str(tmp_path / "out")], capsys
    )
    assert code == 0 and json.loads(out)["totals"]["findings"] == 0


def _one_line_exit_2(code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("secureai: ")


def test_bad_key_and_tampered_envelope_exit_2(
    dataset: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.kek"
    wrong.write_bytes(generate_kek())
    target = dataset["enc"] / "chat.jsonl"
    for cmd in (
        ["dataset", "scan", "--key", str(wrong), str(target)],
        [
            "dataset", "pseudonymize", "--pseudonym-key", str(dataset["pkey"]),
            "--key", str(wrong), str(target), str(tmp_path / "o1"),
        ],
        ["dataset", "scan", "--key", str(tmp_path / "missing.kek"), str(target)],
    ):  # fmt: skip
        code, out, err = run(cmd, capsys)
        _one_line_exit_2(code, out, err)
        assert "wrong key" in err or "not found" in err
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(bytes(data))
    for cmd in (
        ["dataset", "scan", "--key", str(dataset["key"]), str(bad)],
        [
            "dataset", "pseudonymize", "--pseudonym-key", str(dataset["pkey"]),
            "--key", str(dataset["key"]), str(bad), str(tmp_path / "o2"),
        ],
    ):  # fmt: skip
        code, out, err = run(cmd, capsys)
        _one_line_exit_2(code, out, err)
        assert "authentication" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "wrong.kek"]


def test_pseudonymize_refuses_unreadable_files_and_leaves_nothing(
    dataset: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        [
            "dataset", "pseudonymize", "--pseudonym-key", str(dataset["pkey"]),
            str(dataset["plain"]), str(tmp_path / "out"),
        ],
        capsys,
    )  # fmt: skip
    _one_line_exit_2(code, out, err)
    assert "blob.bin" in err
    assert list(tmp_path.iterdir()) == []


def test_interrupted_pseudonymize_leaves_nothing(dataset: dict[str, Any], tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        (src / f"{i}.txt").write_bytes((dataset["plain"] / "big.txt").read_bytes())
    out_dir = tmp_path / "out"

    def written() -> bool:
        return any(
            p.is_file() and p.stat().st_size
            for p in tmp_path.rglob("*")
            if p.relative_to(tmp_path).parts[0] != "in"
        )

    # An existing empty destination (a mount point, say) is staged inside itself.
    for sig, existing in ((signal.SIGTERM, False), (signal.SIGINT, True)):
        if existing:
            out_dir.mkdir()
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "secureai.cli.main", "dataset", "pseudonymize",
                "--pseudonym-key", str(dataset["pkey"]), str(src), str(out_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not written():  # the work is under way: a partial output file exists
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, err
        assert out == b"" and err.decode().count("\n") == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in"] + ["out"] * existing
        assert not existing or list(out_dir.iterdir()) == []
    # Completed, the same existing directory holds the output and nothing else.
    code = _pseudonymize(dataset, src, out_dir, dataset["pkey"])
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{i}.txt" for i in range(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


# --------------------------------------------------------------------------- init container


def _job(allowed: list[str] | None, encrypted: bool) -> dict[str, Any]:
    ds: dict[str, Any] = {"claimName": "data"}
    if encrypted:
        ds.update(encrypted=True, keySecret="kek")
    spec: dict[str, Any] = {
        "image": "registry.example.com/t@sha256:" + "a" * 64,
        "resources": {"cpu": "1", "memory": "1Gi"},
        "datasets": [ds],
    }
    if allowed is not None:
        spec["allowedPersonalData"] = allowed
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "SecureTrainingJob",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": spec,
    }


def _policy(**update: Any) -> Policy:
    base = Policy.from_yaml(Path(__file__).parents[2] / "examples" / "policy.yaml")
    return base.model_copy(update=update)


def _init_containers(doc: dict[str, Any], policy: Policy) -> list[dict[str, Any]]:
    (job,) = [m for m in render(parse_workload(doc), policy) if m["kind"] == "Job"]
    return list(job["spec"]["template"]["spec"].get("initContainers", []))


def test_render_scans_only_under_a_rule_and_policy_narrows() -> None:
    policy = _policy()
    (dec,) = _init_containers(_job(None, True), policy)
    assert dec["args"][:2] == ["dataset", "decrypt"]
    assert _init_containers(_job(None, False), policy) == []
    (scan,) = _init_containers(_job(["email"], False), policy)
    assert scan["name"] == "scan-0" and scan["args"][:4] == ["dataset", "scan", "--allow", "email"]
    strict = _policy(dataset_allowed_personal_data=["phone", "ip_address"])
    (dec,) = _init_containers(_job(["email", "phone"], True), strict)
    assert dec["args"][2:4] == ["--allow", "phone"]  # the job can only narrow the policy
    (dec,) = _init_containers(_job(None, True), strict)
    assert dec["args"][2:4] == ["--allow", "ip_address,phone"]
    (dec,) = _init_containers(_job([], True), policy)
    assert dec["args"][2:4] == ["--allow", "none"]


def _run_init(
    container: dict[str, Any], mounts: dict[str, Path], report: Path
) -> subprocess.CompletedProcess[str]:
    def local(arg: str) -> str:
        if arg == "/dev/termination-log":
            return str(report)
        for mount, path in mounts.items():
            if arg == mount or arg.startswith(mount + "/"):
                return str(path) + arg[len(mount) :]
        return arg

    argv = [sys.executable, "-m", "secureai.cli.main", *[local(a) for a in container["args"]]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("encrypted", [True, False])
def test_init_container_refuses_forbidden_types_with_counts_not_values(
    dataset: dict[str, Any], tmp_path: Path, encrypted: bool
) -> None:
    src = tmp_path / "pvc"
    src.mkdir()
    tree = dataset["enc" if encrypted else "plain"]
    (src / "chat.jsonl").write_bytes((tree / "chat.jsonl").read_bytes())
    planted = dataset["planted"]["chat.jsonl"]
    plain = tmp_path / "plain"
    plain.mkdir()
    policy = _policy()
    (init,) = _init_containers(_job(["email", "phone"], encrypted), policy)
    mounts = {"/encrypted": src, "/dataset": src, "/plain": plain}
    kek_dir = tmp_path / "kek"
    kek_dir.mkdir()
    (kek_dir / "kek").write_bytes(dataset["kek"])
    mounts["/var/run/secrets/secureai/kek"] = kek_dir
    report = tmp_path / "termination-log"
    proc = _run_init(init, mounts, report)
    assert proc.returncode == 1, proc.stderr
    reason = proc.stderr.strip()
    assert "\n" not in reason
    counts: dict[str, int] = {}
    for p in planted:
        counts[p.type] = counts.get(p.type, 0) + 1
    for kind, n in counts.items():
        assert (f"{kind}={n}" in reason) is (kind not in ("email", "phone"))
    summary = json.loads(report.read_text())
    assert summary["counts"] == dict(sorted(counts.items()))
    assert summary["violation"] in reason and summary["allowed"] == ["email", "phone"]
    assert len(report.read_bytes()) < 4096
    for p in planted:
        assert p.value not in proc.stdout + proc.stderr + report.read_text()
    assert list(plain.iterdir()) == []  # refused data never reaches the trainer
    # What the operator reads back from the pod (kubelet: file -> terminated.message).
    term = {"exitCode": 1, "message": report.read_text()}
    status = {"initContainerStatuses": [{"name": init["name"], "state": {"terminated": term}}]}
    cr = parse_workload(_job(["email", "phone"], encrypted))
    assert isinstance(cr, SecureTrainingJob)
    (census,) = dataset_census(cr, status)
    assert census.claim_name == "data" and census.counts == dict(sorted(counts.items()))
    assert census.violation == summary["violation"] and census.files == 1
    term["message"] = "secureai: wrong key"  # a failure leaves stderr (FallbackToLogsOnError)
    assert dataset_census(cr, status) == []


def test_init_container_decrypts_allowed_dataset(dataset: dict[str, Any], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    kek_dir = tmp_path / "kek"
    kek_dir.mkdir()
    (kek_dir / "kek").write_bytes(dataset["kek"])
    src = tmp_path / "pvc"
    (src / "sub").mkdir(parents=True)
    for name in ("chat.jsonl", "sub/people.csv", "table.parquet"):
        (src / name).write_bytes((dataset["enc"] / name).read_bytes())
    policy = _policy()
    (init,) = _init_containers(_job(list(TYPES), True), policy)
    report = tmp_path / "termination-log"
    mounts = {"/encrypted": src, "/plain": plain, "/var/run/secrets/secureai/kek": kek_dir}
    proc = _run_init(init, mounts, report)
    assert proc.returncode == 0, proc.stderr
    for name in ("chat.jsonl", "sub/people.csv", "table.parquet"):
        assert (plain / name).read_bytes() == (dataset["plain"] / name).read_bytes()
    assert sorted(p.name for p in plain.iterdir()) == ["chat.jsonl", "sub", "table.parquet"]
    summary = json.loads(report.read_text())
    assert summary["violation"] is None and summary["files"] == 3 and summary["unreadable"] == 0


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.integers(1, 400), min_size=1, max_size=12),
)
def test_stream_finds_the_same_values_wherever_the_text_is_cut(
    kinds: list[str], seed: int, cuts: list[int]
) -> None:
    rng = random.Random(seed)
    parts = []
    for i, k in enumerate(kinds):
        parts.append(rng.choice(["a ", "x\n", "data: ", "\n\n", ", "]) + value(k, rng, i))
    text = "".join(parts) + " end\n"
    whole = [(f.type, f.start, f.end) for f in detect(text)]
    data = text.encode("latin-1")
    stream = build(TYPES).stream()
    found: list[tuple[str, int, int]] = []
    pos = 0
    for c in sorted(set(cuts)):
        if c >= len(text):
            break
        found += [(m.type, m.start, m.end) for m in stream.feed(data[pos:c])[2]]
        pos = c
    found += [(m.type, m.start, m.end) for m in stream.feed(data[pos:])[2]]
    found += [(m.type, m.start, m.end) for m in stream.flush()[2]]
    assert found == whole


def test_progress_bar_only_on_a_terminal(dataset: dict[str, Any]) -> None:
    import pty  # noqa: PLC0415 - POSIX only

    target = str(dataset["plain"] / "big.txt")
    argv = [sys.executable, "-m", "secureai.cli.main", "dataset", "scan", "-o", "json", target]
    piped = subprocess.run(argv, capture_output=True, timeout=300, check=True)
    assert piped.stderr == b""
    leader, follower = pty.openpty()
    drawn = bytearray()

    def drain() -> None:  # read as it is drawn: a full terminal buffer would block the CLI
        while True:
            try:
                piece = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not piece:
                return
            drawn.extend(piece)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower) as proc:
        os.close(follower)
        out, _ = proc.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(leader)
    assert proc.returncode == 0
    assert b"\rscan [" in drawn and b"MiB/s" in drawn
    assert json.loads(out) == json.loads(piped.stdout)  # stdout is the same either way
