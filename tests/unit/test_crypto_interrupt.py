"""Interrupted crypto leaves no plaintext and no broken tree (issue 14 items 1-3, issue 12 item 3).

Real signals against real processes: a CLI decrypting from a FIFO is interrupted while it holds
partial plaintext; ``rekey`` is SIGKILLed at every write and rename of a small tree, then rerun.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from secureai.cli.crypto_cmds import main
from secureai.crypto import envelope as env
from secureai.crypto.envelope import (
    HEADER_SIZE,
    PARTIAL_SUFFIX,
    TAG_SIZE,
    decrypt_dir,
    decrypt_file,
    encrypt_dir,
    encrypt_file,
    encrypt_stream,
    kek_id,
    read_header,
    reencrypt_dir,
)

KEK = bytes(range(32))
NEW_KEK = bytes(range(100, 132))
CS = 64
DEADLINE = 20.0
MODES = ["o_tmpfile", "named"]

# Runs the CLI with O_TMPFILE on or off (the fallback path must be just as clean).
CLI = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from secureai.crypto import envelope
    envelope._USE_O_TMPFILE = sys.argv[1] == "o_tmpfile"
    # a source tree may hold a FIFO here, so the test controls how far decryption gets
    envelope._walk_files = lambda root: iter(sorted(Path(n.name) for n in root.iterdir()))
    from secureai.cli.crypto_cmds import main
    sys.exit(main(sys.argv[2:]))
    """
)


def _data(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def _enc(data: bytes, chunk: int = CS) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, KEK, chunk_size=chunk)
    return out.getvalue()


def _wait_for(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _holds_output(proc: subprocess.Popen[str], fifo: Path, directory: Path) -> bool:
    """The process reads ``fifo`` and has a non-empty file open in ``directory``."""
    if proc.poll() is not None:
        raise AssertionError(f"exited early: {proc.communicate()}")
    reading = writing = False
    for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            reading |= target == str(fifo)
            writing |= target.startswith(f"{directory}/") and fd.stat().st_size > 0
    return reading and writing


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "kek"
    path.write_bytes(base64.b64encode(KEK) + b"\n")  # as keygen wrote it before 'base64:'

    return path


@contextlib.contextmanager
def _decrypt_mid_stream(
    tmp_path: Path, keyfile: Path, mode: str, dst: Path, *, tree: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """A CLI decryption blocked on its source after writing some plaintext."""
    big = 16 << 10  # chunks larger than the output buffer, so plaintext reaches the file
    blob = _enc(_data(20 * big), chunk=big)
    if tree:
        src = tmp_path / "enc"
        src.mkdir()
        (src / "a").write_bytes(_enc(_data(10, 1)))
        fifo = src / "b"
    else:
        src = fifo = tmp_path / "big.sae"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, mode, "dataset", "decrypt", "--key", str(keyfile), src, dst],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # O_RDWR never blocks on a FIFO; what is written fits in the pipe buffer
    writer = os.open(fifo, os.O_RDWR)
    try:
        os.write(writer, blob[: HEADER_SIZE + 3 * (big + TAG_SIZE)])
        watched = dst.parent if not tree else dst
        _wait_for("partial plaintext", lambda: _holds_output(proc, fifo, watched))
        yield proc
        proc.wait(timeout=DEADLINE)
    finally:
        os.close(writer)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("tree", [False, True], ids=["file", "tree"])
def test_sigterm_and_sigint_remove_every_partial_output(
    tmp_path: Path, keyfile: Path, mode: str, sig: signal.Signals, tree: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "plain"
    before = sorted(os.listdir(tmp_path))
    with _decrypt_mid_stream(tmp_path, keyfile, mode, dst, tree=tree) as proc:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 128 + sig, stderr
    assert stdout == ""
    assert stderr.splitlines() == [f"secureai: interrupted by {sig.name}; partial output removed"]
    assert os.listdir(out) == []
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "enc" if tree else "big.sae"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tree", [False, True], ids=["file", "tree"])
def test_sigkill_leftovers_are_nameless_or_removed_by_the_next_run(
    tmp_path: Path, keyfile: Path, mode: str, tree: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "plain"
    if tree:
        dst.mkdir()  # an existing empty directory, as an emptyDir mount point is
    with _decrypt_mid_stream(tmp_path, keyfile, mode, dst, tree=tree) as proc:
        proc.kill()
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    if mode == "o_tmpfile" and not tree:
        assert leftovers == []  # the partial plaintext never had a name
    if mode == "named" or tree:
        assert leftovers, "expected a recognisable leftover to exercise the cleanup"
        assert all(
            any(part.endswith(PARTIAL_SUFFIX) for part in p.relative_to(out).parts)
            for p in leftovers
        )
    # the next run (same destination) removes what the killed one left, then succeeds
    src = tmp_path / ("enc" if tree else "big.sae")
    if tree:
        (src / "b").unlink()
        (src / "b").write_bytes(_enc(_data(200, 2)))
    else:
        src.unlink()
        src.write_bytes(_enc(_data(200, 2)))
    result = subprocess.run(
        [sys.executable, "-c", CLI, mode, "dataset", "decrypt", "--key", str(keyfile), src, dst],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert names == (["plain", "plain/a", "plain/b"] if tree else ["plain"])


def test_leftover_of_a_live_writer_is_not_touched(tmp_path: Path) -> None:
    env_use = env._USE_O_TMPFILE
    env._USE_O_TMPFILE = False
    try:
        pending = env._PendingFile(tmp_path / "x")
        pending.fh.write(b"partial")
        assert env.remove_leftovers(tmp_path) == []  # its writer holds the lock
        assert pending.tmp is not None and pending.tmp.exists()
        pending.discard()
        assert os.listdir(tmp_path) == []
    finally:
        env._USE_O_TMPFILE = env_use


# --- rekey: SIGKILL at every write and rename, then resume ---------------------------------


def _rekey_killed_after(budget: int, mode: str, root: Path) -> bool:
    """Rekey ``root`` in a forked child SIGKILLed at its ``budget``-th write, link, rename or
    unlink; True if it finished first."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            count = 0

            def tick() -> None:
                nonlocal count
                if count == budget:
                    os.kill(os.getpid(), signal.SIGKILL)
                count += 1

            class Counting:
                def __init__(self, inner: Any) -> None:
                    self.inner = inner

                def write(self, data: Any) -> Any:
                    tick()
                    return self.inner.write(data)

            def counted(real: Callable[..., Any]) -> Callable[..., Any]:
                def wrapped(*a: Any, **kw: Any) -> Any:
                    tick()
                    return real(*a, **kw)

                return wrapped

            env._USE_O_TMPFILE = mode == "o_tmpfile"
            real_encrypt = env.encrypt_stream
            setattr(  # noqa: B010 - replaced in the forked child only
                env,
                "encrypt_stream",
                lambda s, d, k, **kw: real_encrypt(s, cast(BinaryIO, Counting(d)), k, **kw),
            )
            for name in ("replace", "link", "rename", "unlink"):
                setattr(os, name, counted(getattr(os, name)))
            reencrypt_dir(root, KEK, NEW_KEK)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return False
    assert os.WEXITSTATUS(status) == 0, "rekey failed in the child"
    return True


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("mode", MODES)
def test_rekey_resumes_after_sigkill_at_every_chunk_boundary(tmp_path: Path, mode: str) -> None:
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "f0").write_bytes(_data(3 * CS + 5))  # four chunks
    (plain / "sub" / "f1").write_bytes(_data(CS, 1))  # one full chunk and an empty final one
    original = _tree(plain)
    encrypt_dir(plain, tmp_path / "pristine", KEK, chunk_size=CS)
    killed_at = 0
    for budget in range(200):
        work = tmp_path / f"run{budget}"
        shutil.copytree(tmp_path / "pristine", work)
        finished = _rekey_killed_after(budget, mode, work)
        killed_at += not finished
        # resume: converges, every file under the new KEK, same names, same chunk size
        reencrypt_dir(work, KEK, NEW_KEK)
        assert sorted(_tree(work)) == sorted(original), f"stray files after kill #{budget}"
        for rel in original:
            with (work / rel).open("rb") as fh:
                header = read_header(fh)
            assert (header.kek_id, header.chunk_size) == (kek_id(NEW_KEK), CS)
        decrypt_dir(work, tmp_path / f"check{budget}", NEW_KEK)
        assert _tree(tmp_path / f"check{budget}") == original
        shutil.rmtree(work)
        if finished:
            break
    else:
        pytest.fail("rekey never finished")
    # 2 header writes + chunks + publish steps per file: every one of them was a kill point
    assert killed_at >= (2 + 4) + (2 + 2)


def test_rekey_keeps_each_files_chunk_size_unless_asked(tmp_path: Path) -> None:
    for name, chunk in (("small", 16), ("mid", 4096)):
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "p" / name).write_bytes(_data(9000))
        encrypt_file(tmp_path / "p" / name, tmp_path / name, KEK, chunk_size=chunk)
    shutil.rmtree(tmp_path / "p")
    env.reencrypt_file(tmp_path / "small", tmp_path / "small", KEK, NEW_KEK)
    env.reencrypt_file(tmp_path / "mid", tmp_path / "mid", KEK, NEW_KEK, chunk_size=256)
    sizes = {}
    for name in ("small", "mid"):
        with (tmp_path / name).open("rb") as fh:
            sizes[name] = read_header(fh).chunk_size
        assert decrypt_file(tmp_path / name, tmp_path / f"{name}.out", NEW_KEK) == 9000
    assert sizes == {"small": 16, "mid": 256}


def test_rekey_cli_keeps_chunk_size(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keyfile: Path
) -> None:
    (tmp_path / "p").write_bytes(_data(5000))
    encrypt_file(tmp_path / "p", tmp_path / "e", KEK, chunk_size=128)
    new = tmp_path / "new"
    new.write_bytes(b"hex:" + NEW_KEK.hex().encode() + b"\n")
    assert (
        main(
            ["dataset", "rekey", "--key", str(keyfile), "--new-key", str(new), str(tmp_path / "e")]
        )
        == 0
    )
    with (tmp_path / "e").open("rb") as fh:
        assert read_header(fh).chunk_size == 128
    args = ["--key", str(new), "--new-key", str(keyfile), "--chunk-size", "1024"]
    assert main(["dataset", "rekey", *args, str(tmp_path / "e")]) == 0
    with (tmp_path / "e").open("rb") as fh:
        assert read_header(fh).chunk_size == 1024
    capsys.readouterr()


def test_rekey_refuses_a_truncated_file_that_claims_the_new_key(tmp_path: Path) -> None:
    """A file is skipped only if it fully authenticates under the new KEK."""
    (tmp_path / "p").write_bytes(_data(500))
    encrypt_file(tmp_path / "p", tmp_path / "e", NEW_KEK, chunk_size=CS)
    (tmp_path / "p").unlink()
    blob = (tmp_path / "e").read_bytes()
    (tmp_path / "e").write_bytes(blob[: HEADER_SIZE + CS + TAG_SIZE])
    with pytest.raises(env.TruncatedError, match=r"^e: "):
        reencrypt_dir(tmp_path, KEK, NEW_KEK)


# --- decrypt_dir into a mount point (issue 12 item 3) ----------------------------------------


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """No entry of ``path`` can be created, renamed or removed, even by root (like a mount's
    parent on a read-only root filesystem)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr not available")
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode:
        pytest.skip("cannot set the immutable attribute here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("mode", MODES)
def test_decrypt_dir_into_an_existing_empty_mount_point(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(env, "_USE_O_TMPFILE", mode == "o_tmpfile")
    plain = tmp_path / "plain"
    (plain / "d").mkdir(parents=True)
    (plain / "a.csv").write_bytes(_data(300))
    (plain / "d" / "b.bin").write_bytes(_data(CS, 3))
    encrypt_dir(plain, tmp_path / "enc", KEK, chunk_size=CS)
    parent = tmp_path / "pod"
    mount = parent / "data"
    mount.mkdir(parents=True)
    with _immutable(parent):
        assert decrypt_dir(tmp_path / "enc", mount, KEK) == (2, 300 + CS)
        assert os.listdir(parent) == ["data"]
    assert _tree(mount) == _tree(plain)
    assert sorted(os.listdir(mount)) == ["a.csv", "d"]


def test_failed_decrypt_into_a_mount_point_leaves_it_empty(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(3):
        (plain / f"f{i}").write_bytes(_data(200, i))
    encrypt_dir(plain, tmp_path / "enc", KEK, chunk_size=CS)
    victim = tmp_path / "enc" / "f2"
    blob = bytearray(victim.read_bytes())
    blob[-1] ^= 1
    victim.write_bytes(bytes(blob))
    parent = tmp_path / "pod"
    mount = parent / "data"
    mount.mkdir(parents=True)
    with _immutable(parent):
        with pytest.raises(env.TamperedError, match=r"^f2: "):
            decrypt_dir(tmp_path / "enc", mount, KEK)
        assert os.listdir(parent) == ["data"]
    assert os.listdir(mount) == []


def test_interrupted_commit_is_rolled_back_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even an interruption between the renames of the commit leaves no plaintext for long."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(3):
        (plain / f"f{i}").write_bytes(_data(100, i))
    encrypt_dir(plain, tmp_path / "enc", KEK, chunk_size=CS)
    dst = tmp_path / "dst"
    dst.mkdir()
    real_rename = os.rename
    calls: list[Any] = []

    def rename_then_die(a: Any, b: Any) -> None:
        calls.append(b)
        real_rename(a, b)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", rename_then_die)
    monkeypatch.setattr(env, "_roll_back_stage", lambda *_: None)  # as if SIGKILLed
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        decrypt_dir(tmp_path / "enc", dst, KEK)
    monkeypatch.undo()
    assert sorted(n for n in os.listdir(dst) if not n.endswith(PARTIAL_SUFFIX)) == ["f0", "f1"]
    assert decrypt_dir(tmp_path / "enc", dst, KEK) == (3, 300)
    assert sorted(os.listdir(dst)) == ["f0", "f1", "f2"]


def test_rekey_of_one_file_is_resumable_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keyfile: Path
) -> None:
    (tmp_path / "p").write_bytes(_data(700))
    encrypt_file(tmp_path / "p", tmp_path / "e", KEK, chunk_size=CS)
    new = tmp_path / "new"
    new.write_bytes(b"hex:" + NEW_KEK.hex().encode() + b"\n")
    args = ["dataset", "rekey", "--key", str(keyfile), "--new-key", str(new), str(tmp_path / "e")]
    assert main(args) == 0
    assert '"rotated": 1' in capsys.readouterr().out
    assert main(args) == 0  # the rerun after an interruption past the rename: nothing to do
    assert '"skipped": 1' in capsys.readouterr().out
    blob = (tmp_path / "e").read_bytes()
    (tmp_path / "e").write_bytes(blob[:-1])
    assert main(args) == 2
    assert "truncated" in capsys.readouterr().err
