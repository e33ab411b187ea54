"""A writer killed while replacing an existing output leaves a leftover that the cleanup for
that destination finds, and the old file intact.

With ``O_TMPFILE`` a new file has no name until it is complete; replacing an existing file
still needs one, for an instant: the complete file is linked under a temporary name, then
renamed over the old one. A kill between the two leaves that name behind, and
``remove_leftovers(directory, stem=<destination>)`` must recognise it as that destination's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from secureai.crypto import envelope as env

KEK = bytes(range(32))

# Encrypts over an existing destination and dies at the rename, as a SIGKILL would: no
# cleanup runs, the lock goes with the process.
KILLED_AT_RENAME = textwrap.dedent(
    """
    import os, sys
    from secureai.crypto import envelope
    envelope._USE_O_TMPFILE = sys.argv[1] == "o_tmpfile"
    os.replace = lambda *a, **k: os._exit(9)
    envelope.encrypt_file(sys.argv[2], sys.argv[3], bytes(range(32)))
    """
)


@pytest.mark.parametrize("mode", ["o_tmpfile", "named"])
def test_a_writer_killed_while_replacing_leaves_only_a_removable_leftover(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "model.bin", tmp_path / "model.bin.enc"
    src.write_bytes(b"weights " * 1000)
    monkeypatch.setattr(env, "_USE_O_TMPFILE", mode == "o_tmpfile")
    env.encrypt_file(src, dst, KEK)
    old = dst.read_bytes()
    env.encrypt_file(src, dst, KEK)  # replacing works, and leaves nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.bin.enc"]
    assert dst.read_bytes() != old  # a fresh data key and nonce: new ciphertext
    old = dst.read_bytes()

    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AT_RENAME, mode, str(src), str(dst)],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr
    assert dst.read_bytes() == old  # the old file is intact
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("model.bin", dst.name))
    assert len(left) == 1, left
    assert left[0].startswith(f".{dst.name}.") and left[0].endswith(env.PARTIAL_SUFFIX)
    assert env.remove_leftovers(tmp_path, stem="other.enc") == []  # another destination's
    assert env.remove_leftovers(tmp_path, stem=dst.name) == left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.bin.enc"]
