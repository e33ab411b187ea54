"""`make images`: reproducible digests, one generated digests file, no hand-written digest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DIGESTS = REPO / "charts" / "secureai-operator" / "images.json"
IMAGE_DIGEST = re.compile(r"(?P<repo>[a-z0-9][a-z0-9.\-/_:]*)@(?P<digest>sha256:[0-9a-f]{64})")


def built() -> dict[str, dict[str, str]]:
    if not DIGESTS.exists():
        pytest.fail(
            "charts/secureai-operator/images.json is missing: run `make images`", pytrace=False
        )
    return dict(json.loads(DIGESTS.read_text())["images"])


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    return [REPO / p for p in out.decode().split("\0") if p]


def synthetic(digest: str) -> bool:
    """One repeated hex digit: visibly not the digest of anything (test inputs, API docs)."""
    return len(set(digest.removeprefix("sha256:"))) == 1


def test_no_hand_written_image_digest() -> None:
    """Every image digest in a tracked file is one that the build produced, or visibly fake."""
    real = {info["digest"] for info in built().values()}
    stray = []
    for path in tracked_files():
        # the guard's corpora hold digests as text to classify, not as image references
        if path.suffix in {".png", ".lock"} or path.name.startswith("guard_corpus"):
            continue
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for match in IMAGE_DIGEST.finditer(text):
            if match["digest"] not in real and not synthetic(match["digest"]):
                stray.append(f"{path.relative_to(REPO)}: {match.group(0)}")
    assert not stray, "digests not produced by `make images`:\n" + "\n".join(stray)


def test_examples_use_the_built_images() -> None:
    images = {info["repository"]: info["image"] for info in built().values()}
    seen = 0
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            refs = [doc.get("spec", {}).get("image")] if isinstance(doc, dict) else []
            if isinstance(doc, dict) and "operatorImage" in doc:
                refs.append(doc["operatorImage"])
            for ref in filter(None, refs):
                repo = ref.split("@", 1)[0]
                assert images.get(repo) == ref, f"{path.name}: {ref} is not the built {repo}"
                seen += 1
    assert seen >= 5


def test_chart_renders_the_built_operator_digest(tmp_path: Path) -> None:
    bindir = subprocess.run(
        [str(REPO / "hack" / "build.sh"), "--print-bindir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    helm = Path(bindir) / "helm"
    if not helm.exists():
        pytest.fail(f"{helm} missing: run `make toolchain`", pytrace=False)
    out = subprocess.run(
        [
            str(helm),
            "template",
            "secureai",
            str(REPO / "charts" / "secureai-operator"),
            "-n",
            "secureai-system",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    operator = built()["secureai-operator"]["image"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]} == {operator}
    policy = next(
        d for d in docs if d["kind"] == "ConfigMap" and "policy.yaml" in d.get("data", {})
    )
    assert yaml.safe_load(policy["data"]["policy.yaml"])["operatorImage"] == operator


@pytest.mark.slow
def test_two_builds_give_identical_digests(tmp_path: Path) -> None:
    """A forced rebuild reproduces every digest of images.json, from a venv at another path.

    A fresh clone has its venv elsewhere: nothing of the build host's paths may reach an image.
    """
    elsewhere = tmp_path / "another-clone-venv"
    elsewhere.symlink_to(REPO / ".venv", target_is_directory=True)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "images.py"),
            "build",
            "--force",
            "--no-digests-file",
            "--python",
            str(elsewhere / "bin" / "python"),
            "--out",
            str(tmp_path / "oci"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = {name: info["digest"] for name, info in json.loads(proc.stdout).items()}
    assert again == {name: info["digest"] for name, info in built().items()}
