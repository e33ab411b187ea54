#!/usr/bin/env python3
"""Build secureai's OCI images without a container engine, reproducibly.

    hack/images.py build [--out DIR]   build every image; write the digests file
    hack/images.py lock                re-resolve images/debian.lock and images/requirements.lock
    hack/images.py print-digests       print the digests file (build first)

Inputs, all pinned: Debian packages by version and sha256 (images/debian.lock, downloaded with
apt-get and cached outside the clone), Python wheels by version and sha256
(images/requirements.lock, pip), the project's own tracked sources (git ls-files), and a
static Go pause binary. Layers are plain tars with sorted entries, uid/gid 0, fixed mtimes
(SOURCE_DATE_EPOCH, default 0), so two builds of one commit give identical digests.

Output: one OCI image-layout tarball per image under the cache (what `ctr images import`
reads), and the generated digests file charts/secureai-operator/images.json that the chart,
the examples (`--write-examples`) and the tests read. No digest is ever typed in. A build whose
inputs (locks, sources, this script) are unchanged reuses the cached archives.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
DEB_LOCK = IMAGES / "debian.lock"
PY_LOCK = IMAGES / "requirements.lock"
DIGESTS = REPO / "charts" / "secureai-operator" / "images.json"
CACHE = Path(os.environ.get("SECUREAI_CACHE", Path.home() / ".cache" / "secureai")) / "images"
REGISTRY = "secureai.local"
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
UID = 65532
PYTHON = "/usr/bin/python3.11"
SITE = "usr/lib/python3/dist-packages"

# What the Python runtime needs from Debian (bookworm): the interpreter, its standard library
# and the shared libraries its extension modules and the wheels load. Modules whose libraries
# are left out (curses, readline, dbm, nis) fail on import, which nothing here needs.
DEBIAN_PACKAGES = [
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "libssl3",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libcrypt1",
    "media-types",
    "netbase",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
]
# Dropped from every package: documentation and localisation, never read at run time.
SKIP_PREFIXES = ("usr/share/doc/", "usr/share/man/", "usr/share/lintian/", "usr/share/locale/")
# Debian's merged /usr: packages may still ship /lib, /bin, /sbin, /lib64 paths.
MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- layers --------------------------------------------------------------------------------
@dataclass
class Entry:
    kind: str  # "dir", "file", "symlink"
    mode: int = 0o755
    data: bytes = b""
    target: str = ""


@dataclass
class Layer:
    """A filesystem layer built in memory: path (no leading slash) -> entry."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            self.entries.setdefault(parent, Entry("dir", 0o755))

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries[path] = Entry("dir", mode)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(path)
        self.entries[path] = Entry("file", mode, data)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries[path] = Entry("symlink", 0o777, target=target)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                e = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
                if e.kind == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, e.mode
                    tar.addfile(info)
                elif e.kind == "symlink":
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.target, 0o777
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(e.data), e.mode
                    tar.addfile(info, io.BytesIO(e.data))
        return buf.getvalue()


def normalise_mode(mode: int, is_dir: bool) -> int:
    if is_dir:
        return 0o755
    return 0o755 if mode & 0o111 else 0o644


def add_tree(layer: Layer, root: Path, dest: str, skip: re.Pattern[str] | None = None) -> None:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if skip and skip.search(rel):
            continue
        target = f"{dest}/{rel}" if dest else rel
        if path.is_symlink():
            layer.symlink(target, os.readlink(path))
        elif path.is_dir():
            layer.dir(target)
        else:
            layer.file(target, path.read_bytes(), normalise_mode(path.stat().st_mode, False))


# ---- Debian ----------------------------------------------------------------------------------
def deb_lock() -> list[dict[str, str]]:
    out = []
    for line in DEB_LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version, digest, filename = line.split()
            out.append({"name": name, "version": version, "sha256": digest, "file": filename})
    return out


def fetch_debs() -> list[Path]:
    cache = CACHE / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    updated = False
    for pkg in deb_lock():
        path = cache / pkg["file"]
        if not path.exists() or sha256_file(path) != pkg["sha256"]:
            log(f"apt-get download {pkg['name']}={pkg['version']}")
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                cmd = ["apt-get", "download", f"{pkg['name']}={pkg['version']}"]
                done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
                if done.returncode != 0 and os.geteuid() == 0 and not updated:
                    log("apt-get update (package lists are missing or old)")
                    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
                    updated = True
                    done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
                got = list(Path(tmp).glob("*.deb"))
                if done.returncode != 0 or len(got) != 1:
                    reason = (done.stderr.strip().splitlines() or ["no .deb"])[-1]
                    sys.exit(
                        f"images: cannot download {pkg['name']}={pkg['version']}: {reason} "
                        "(run 'apt-get update'; if the version is gone, 'hack/images.py lock')"
                    )
                shutil.move(str(got[0]), path)
        if sha256_file(path) != pkg["sha256"]:
            sys.exit(f"images: {path.name} does not match its sha256 in {DEB_LOCK.name}")
        paths.append(path)
    return paths


def merged_path(path: str) -> str:
    head, _, rest = path.partition("/")
    if head in MERGED:
        return f"{MERGED[head]}/{rest}" if rest else MERGED[head]
    return path


def debian_layer() -> Layer:
    layer = Layer()
    for deb in fetch_debs():
        raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(raw.stdout)) as tar:
            for m in tar.getmembers():
                path = merged_path(m.name.removeprefix("./").rstrip("/"))
                if not path or path.startswith(SKIP_PREFIXES):
                    continue
                if m.isdir():
                    layer.dir(path)
                elif m.issym():
                    target = m.linkname
                    if target.startswith("/"):
                        target = "/" + merged_path(target.lstrip("/"))
                    layer.symlink(path, target)
                elif m.islnk():
                    src = merged_path(m.linkname.removeprefix("./"))
                    layer.file(path, layer.entries[src].data, layer.entries[src].mode)
                elif m.isfile():
                    f = tar.extractfile(m)
                    assert f is not None
                    layer.file(path, f.read(), normalise_mode(m.mode, False))
    for link, target in MERGED.items():
        layer.symlink(link, target)
    layer.dir("tmp", 0o1777)
    layer.file("etc/passwd", f"root:x:0:0:root:/root:/nonexistent\nnonroot:x:{UID}:{UID}::/nonexistent:/nonexistent\n".encode())
    layer.file("etc/group", f"root:x:0:\nnonroot:x:{UID}:\n".encode())
    layer.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    return layer


# ---- Python --------------------------------------------------------------------------------
def python_layer(venv_python: Path) -> Layer:
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [str(venv_python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(PY_LOCK), "-d", str(wheels)],
        check=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "site"
        subprocess.run(
            [
                *pip, "install", "--no-deps", "--no-index", "--find-links", str(wheels),
                "--only-binary=:all:", "--require-hashes", "--no-compile", "--target", str(target),
                "-r", str(PY_LOCK),
            ],
            check=True,
        )
        # console scripts name the build host's interpreter: the image has its own launcher
        shutil.rmtree(target / "bin", ignore_errors=True)
        drop_foreign_records(target)
        layer = Layer()
        add_tree(layer, target, SITE, skip=re.compile(r"__pycache__"))
        return layer


def drop_foreign_records(site: Path) -> None:
    """Keep in each RECORD only the files the layer ships, so no build-host path leaks in.

    A RECORD lists the console scripts with their hash, and a script's first line names the
    interpreter of whichever venv ran pip: two clones would otherwise give two digests.
    """
    for record in sorted(site.glob("*.dist-info/RECORD")):
        kept = []
        for line in record.read_text().splitlines():
            rel = line.split(",", 1)[0]
            resolved = (site / rel).resolve()
            if resolved.is_relative_to(site.resolve()) and resolved.is_file():
                kept.append(line)
        record.write_text("\n".join(kept) + "\n")


def project_layer(extra: dict[str, bytes] | None = None) -> Layer:
    layer = Layer()
    for rel in project_files():
        layer.file(f"{SITE}/{rel.removeprefix('operator/')}", (REPO / rel).read_bytes())
    launcher = (
        f"#!{PYTHON}\nimport sys\nfrom secureai.cli.main import main\n"
        'if __name__ == "__main__":  # a spawned child imports it too\n    sys.exit(main())\n'
    )
    layer.file("usr/local/bin/secureai", launcher.encode(), 0o755)
    for path, data in (extra or {}).items():
        layer.file(path, data)
    return layer


def app_layer(files: dict[str, Path]) -> Layer:
    layer = Layer()
    for dest, src in files.items():
        layer.file(dest, src.read_bytes(), 0o644)
    return layer


def pause_layer() -> Layer:
    out = CACHE / "pause"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", str(out / "pause"), "."],
        cwd=IMAGES / "pause",
        env=env,
        check=True,
    )
    layer = Layer()
    layer.file("pause", (out / "pause").read_bytes(), 0o755)
    return layer


# ---- OCI -----------------------------------------------------------------------------------
def blob(blobs: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def oci_image(name: str, tag: str, layers: list[bytes], config: dict[str, object], out: Path) -> str:
    """Write NAME:TAG as an OCI layout tarball at OUT; return the manifest digest."""
    blobs: dict[str, bytes] = {}
    layer_descs = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(blobs, data)} for data in layers
    ]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z" if EPOCH == 0 else None,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]},
    }
    image_config = {k: v for k, v in image_config.items() if v is not None}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(blobs, canonical(image_config))},
        "layers": layer_descs,
    }
    mdesc = blob(blobs, canonical(manifest))
    ref = f"{REGISTRY}/{name}:{tag}"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **mdesc,
                "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    files = {"oci-layout": canonical({"imageLayoutVersion": "1.0.0"}), "index.json": canonical(index)}
    for digest, data in blobs.items():
        files[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in ["blobs", "blobs/sha256", *sorted(files)]:
            info = tarfile.TarInfo(path)
            info.mtime, info.uid, info.gid = EPOCH, 0, 0
            if path in files:
                info.size, info.mode = len(files[path]), 0o644
                tar.addfile(info, io.BytesIO(files[path]))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    tmp.replace(out)
    return str(mdesc["digest"])


def version() -> str:
    text = (REPO / "operator" / "secureai" / "__init__.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match
    return match.group(1)


def project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "operator/secureai"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(p for p in out.split("\0") if p and (REPO / p).is_file())


def inputs_key() -> str:
    """A digest of everything that goes into the images: equal keys give equal images."""
    h = hashlib.sha256()
    paths = [DEB_LOCK, PY_LOCK, Path(__file__).resolve(), *sorted((IMAGES).rglob("*.py")), *sorted((IMAGES / "pause").glob("*"))]
    paths += [REPO / p for p in project_files()]
    for path in paths:
        if path.is_file():
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"epoch={EPOCH}".encode())
    return h.hexdigest()


def build_cached(out_dir: Path, venv_python: Path, force: bool) -> dict[str, dict[str, str]]:
    key = inputs_key()
    stamp = out_dir / "result.json"
    if not force and stamp.exists():
        cached = json.loads(stamp.read_text())
        if cached.get("key") == key and all(Path(i["archive"]).exists() for i in cached["images"].values()):
            log(f"images up to date in {out_dir} (inputs {key[:12]})")
            return dict(cached["images"])
    result = build(out_dir, venv_python)
    stamp.write_text(json.dumps({"key": key, "images": result}, indent=2, sort_keys=True) + "\n")
    return result


def build(out_dir: Path, venv_python: Path) -> dict[str, dict[str, str]]:
    tag = version()
    env = ["PATH=/usr/local/bin:/usr/bin", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/nonexistent"]
    user = f"{UID}:{UID}"
    log("layer: debian")
    base = debian_layer().tar()
    log("layer: python wheels")
    deps = python_layer(venv_python).tar()
    log("layer: secureai")
    own = project_layer().tar()
    log("layer: test apps")
    modelserver = app_layer(
        {"app/modelserver.py": IMAGES / "modelserver" / "modelserver.py", "app/probe.py": IMAGES / "modelserver" / "probe.py"}
    ).tar()
    trainer = app_layer({"app/train.py": IMAGES / "trainer" / "train.py"}).tar()
    log("layer: pause")
    pause = pause_layer().tar()
    specs = {
        "secureai-operator": ([base, deps, own], {"User": user, "Env": env, "Entrypoint": ["/usr/local/bin/secureai"], "WorkingDir": "/"}),
        "modelserver": ([base, modelserver], {"User": user, "Env": env, "Entrypoint": [PYTHON, "/app/modelserver.py"], "WorkingDir": "/"}),
        "trainer": ([base, trainer], {"User": user, "Env": env, "Entrypoint": [PYTHON, "/app/train.py"], "WorkingDir": "/"}),
        "pause": ([pause], {"User": "65535:65535", "Entrypoint": ["/pause"]}),
    }
    result: dict[str, dict[str, str]] = {}
    for name, (layers, config) in specs.items():
        path = out_dir / f"{name}.oci.tar"
        digest = oci_image(name, tag, layers, config, path)
        ref = f"{REGISTRY}/{name}"
        result[name] = {"repository": ref, "tag": tag, "digest": digest, "image": f"{ref}@{digest}", "archive": str(path)}
        log(f"{ref}:{tag} {digest}")
    return result


def write_digests(result: dict[str, dict[str, str]]) -> None:
    public = {name: {k: v for k, v in info.items() if k != "archive"} for name, info in result.items()}
    text = json.dumps({"generatedBy": "hack/images.py build", "images": public}, indent=2, sort_keys=True) + "\n"
    DIGESTS.write_text(text)
    log(f"wrote {DIGESTS.relative_to(REPO)}")


def write_examples(result: dict[str, dict[str, str]]) -> None:
    """Point the examples' images at the built test images (generated, like crds/)."""
    refs = {info["repository"]: info["image"] for info in result.values()}
    pattern = re.compile(r"(?P<repo>" + "|".join(re.escape(r) for r in refs) + r")@sha256:[0-9a-f]{64}")
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        text = path.read_text()
        new = pattern.sub(lambda m: refs[m.group("repo")], text)
        if new != text:
            path.write_text(new)
            log(f"updated {path.relative_to(REPO)}")


# ---- lock ----------------------------------------------------------------------------------
def runtime_requirements() -> list[str]:
    import tomllib

    with (REPO / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def lock(venv_python: Path) -> None:
    lines = ["# Generated by hack/images.py lock: Debian packages of the image base (name version sha256 file)."]
    cache = CACHE / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    for name in DEBIAN_PACKAGES:
        policy = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True, check=True).stdout
        match = re.search(r"Candidate: (\S+)", policy)
        if not match or match.group(1) == "(none)":
            sys.exit(f"images: no candidate for {name} (run 'apt-get update')")
        ver = match.group(1)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run(["apt-get", "download", f"{name}={ver}"], cwd=tmp, check=True, capture_output=True)
            (deb,) = Path(tmp).glob("*.deb")
            shutil.move(str(deb), cache / deb.name)
        lines.append(f"{name} {ver} {sha256_file(cache / deb.name)} {deb.name}")
    DEB_LOCK.write_text("\n".join(lines) + "\n")
    log(f"wrote {DEB_LOCK.relative_to(REPO)}")
    lock_python(venv_python)


def lock_python(venv_python: Path) -> None:
    # runtime dependencies, resolved to binary wheels by this CPython 3.11 (glibc 2.36, like the image)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                str(venv_python), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--dry-run",
                "--ignore-installed", "--only-binary=:all:", "--target", str(Path(tmp) / "t"),
                "--report", str(report), *runtime_requirements(),
            ],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    out = ["# Generated by hack/images.py lock: the operator image's Python dependencies."]
    for item in sorted(installs, key=lambda i: i["metadata"]["name"].lower()):
        meta = item["metadata"]
        if meta["name"] == "secureai":
            continue
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        out.append(f"{meta['name']}=={meta['version']} --hash=sha256:{digest}")
    PY_LOCK.write_text("\n".join(out) + "\n")
    log(f"wrote {PY_LOCK.relative_to(REPO)}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/images.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, default=CACHE / "oci")
    b.add_argument("--write-examples", action="store_true")
    b.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    b.add_argument("--no-digests-file", action="store_true", help="do not write the digests file")
    b.add_argument("--python", type=Path, help="the venv whose pip installs the wheels (default .venv)")
    sub.add_parser("lock")
    sub.add_parser("lock-python")
    sub.add_parser("print-digests")
    args = parser.parse_args()
    venv_python = args.python if getattr(args, "python", None) else REPO / ".venv" / "bin" / "python"
    if args.cmd == "lock":
        lock(venv_python)
    elif args.cmd == "lock-python":
        lock_python(venv_python)
    elif args.cmd == "build":
        result = build_cached(args.out, venv_python, args.force)
        if not args.no_digests_file:
            write_digests(result)
        if args.write_examples:
            write_examples(result)
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(DIGESTS.read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
