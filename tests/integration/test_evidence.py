"""Evidence of a quarantined workload on the real control plane (issue 16 point 4, acceptance 3).

No operator process: the test creates a SecureInferenceService object, children carrying the
workload labels (a Secret among them), a pod with an init container, a native sidecar named
``guard`` and a main container on a kwok node, Events, the workload's own NetworkPolicy, a
foreign allow-all one and an unrelated one. It collects, seals, stores (several chunks), loads
and opens the bundle and finds every item; then it exports through the CLI module, and a
tampered stored chunk (alone, or with its digest annotations rewritten to match) fails.

kwok nodes run no kubelet, so the API has no container logs to return: each log read is
recorded as an error entry in ``index.json`` and the test asserts those entries.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clusterkit import REPO, Cluster, wait_for
from operatorkit import apply_yaml, example
from secureai.cli import quarantine_evidence as cli
from secureai.crypto import evidence as ev
from secureai.crypto.signing import generate_signing_key
from secureai.k8s import evidence as kev
from secureai.k8s.client import KubeClient, load_credentials

KIND = "SecureInferenceService"
LABEL_VALUE = "inference"
CONTAINERS = ("decrypt", "guard", "server")  # init, native sidecar, main
WORKLOADS = ("secureinferenceservices", "securetrainingjobs")


@pytest.fixture(scope="module")
def workload_crds(cluster: Cluster) -> None:
    """The two workload CRDs only (the evidence code needs no other kind)."""
    files = [str(REPO / "crds" / f"{plural}.secureai.dev.yaml") for plural in WORKLOADS]
    args = [arg for f in files for arg in ("-f", f)]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", *args)
    for plural in WORKLOADS:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{plural}.secureai.dev", "--timeout=60s"
        )


def _labelled(name: str, workload: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {"secureai.dev/workload": workload, "secureai.dev/kind": LABEL_VALUE},
    }


def _objects(ns: str, workload: str) -> list[dict[str, Any]]:
    image = "registry.example.com/app@sha256:" + "b" * 64
    pod_meta = _labelled(f"{workload}-pod", workload)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {**_labelled(workload, workload), "namespace": ns},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {**_labelled(f"{workload}-guard", workload), "namespace": ns},
            "data": {"guard.json": "{}"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {**_labelled(f"{workload}-tls", workload), "namespace": ns},
            "stringData": {"tls.key": "PRIVATE KEY MATERIAL"},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {**_labelled(f"{workload}-default-deny", workload), "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": pod_meta["labels"]},
                "policyTypes": ["Ingress", "Egress"],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "foreign-allow-all", "namespace": ns},
            "spec": {
                "podSelector": {
                    "matchExpressions": [
                        {"key": "secureai.dev/workload", "operator": "In", "values": [workload]}
                    ]
                },
                "ingress": [{}],
                "egress": [{}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "unrelated", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": "other"}}, "ingress": [{}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**pod_meta, "namespace": ns},
            "spec": {
                "nodeName": "cpu-1",
                "initContainers": [
                    {"name": "decrypt", "image": image},
                    {"name": "guard", "image": image, "restartPolicy": "Always"},
                ],
                "containers": [{"name": "server", "image": image}],
            },
        },
    ]


def _event(ns: str, name: str, kind: str, uid: str, api_version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{uuid.uuid4().hex[:8]}", "namespace": ns},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "namespace": ns,
            "uid": uid,
        },
        "type": "Warning",
        "reason": "EvidenceTest",
        "message": f"about {kind}/{name}",
        "source": {"component": "evidence-test"},
    }


def _args(name: str, out: Path, ops: str, cluster: Cluster, public: Path | None = None) -> Any:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = [name, "--out", str(out), "--operator-namespace", ops]
    argv += ["--kubeconfig", str(cluster.kubeconfig)]
    if public is not None:
        argv += ["--public-key", str(public)]
    return parser.parse_args(argv)


async def _collect_and_store(
    cluster: Cluster, ns: str, ops: str, workload: str, quarantine: str
) -> tuple[dict[str, bytes], bytes, str]:
    async with KubeClient(load_credentials(str(cluster.kubeconfig))) as kube:
        keys = await asyncio.gather(*(kev.evidence_keys(kube, ops) for _ in range(4)))
        assert len(set(keys)) == 1, "racing creators must end with one key set"
        kek, signing, public = keys[0]
        files = await kev.collect(
            kube,
            [(KIND, ns, workload), ("SecureTrainingJob", ns, "no-such-job"), ("Bogus", ns, "x")],
        )
        blob = ev.seal(files, kek, signing, {"quarantine": quarantine})
        ref = await kev.store(kube, ops, quarantine, blob, chunk_size=4096)
        assert await kev.store(kube, ops, quarantine, blob, chunk_size=4096) == ref  # idempotent
        other = ev.seal({"x": b"y"}, kek, signing, {"quarantine": quarantine})
        with pytest.raises(kev.EvidenceExistsError):
            await kev.store(kube, ops, quarantine, other, chunk_size=4096)
        loaded = await kev.load(kube, ops, quarantine)
        assert loaded == blob
        opened, meta = ev.open_bundle(loaded, kek, public)
        assert meta == {"quarantine": quarantine}
        assert opened == files
        assert await kev.public_key(kube, ops) == public
    return files, blob, ref


def test_evidence_holds_every_item_verifies_and_detects_tampering(
    cluster: Cluster,
    workload_crds: None,
    namespace_factory: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns, ops = namespace_factory(), namespace_factory()
    cr = example("inference-cpu.yaml", ns)
    workload = cr["metadata"]["name"]
    apply_yaml(cluster, [cr, *_objects(ns, workload)])
    live_cr = cluster.kubectl_json("get", KIND, workload, "-n", ns, "--show-managed-fields")

    def running() -> Any:
        pod = cluster.kubectl_json("get", "pod", f"{workload}-pod", "-n", ns)
        return pod if (pod.get("status") or {}).get("phase") == "Running" else None

    pod = wait_for(running, timeout=60, description="the kwok pod running")
    events = [
        _event(ns, workload, KIND, live_cr["metadata"]["uid"], live_cr["apiVersion"]),
        _event(ns, pod["metadata"]["name"], "Pod", pod["metadata"]["uid"], "v1"),
        _event(ns, "someone-else", "Pod", str(uuid.uuid4()), "v1"),
    ]
    apply_yaml(cluster, events)
    quarantine = f"poisoned-{uuid.uuid4().hex[:6]}"

    files, blob, ref = asyncio.run(_collect_and_store(cluster, ns, ops, workload, quarantine))
    assert ref == f"secret/{ops}/secureai-evidence-{quarantine}"
    base = f"{ns}/{KIND}/{workload}"

    # the CR, with managedFields as the API returns them
    got_cr = json.loads(files[f"{base}/cr.json"])
    assert got_cr["metadata"]["uid"] == live_cr["metadata"]["uid"]
    assert got_cr["metadata"]["managedFields"] == live_cr["metadata"]["managedFields"]
    # every child, credentials replaced by their digest
    for child in (
        f"ServiceAccount-{workload}",
        f"ConfigMap-{workload}-guard",
        f"Secret-{workload}-tls",
        f"NetworkPolicy-{workload}-default-deny",
    ):
        body = json.loads(files[f"{base}/children/{child}.json"])
        assert body["metadata"]["managedFields"], child
    secret = json.loads(files[f"{base}/children/Secret-{workload}-tls.json"])
    assert secret["data"]["tls.key"].startswith("sha256:")
    assert not any(b"PRIVATE KEY MATERIAL" in d for d in files.values())
    # the pod's spec and status
    got_pod = json.loads(files[f"{base}/pods/{workload}-pod.json"])
    assert got_pod["status"]["phase"] == "Running"
    assert [c["name"] for c in got_pod["spec"]["initContainers"]] == ["decrypt", "guard"]
    # Events about the CR and its pod, and no other
    got_events = json.loads(files[f"{base}/events.json"])
    assert {e["involvedObject"]["name"] for e in got_events} == {workload, f"{workload}-pod"}
    # the NetworkPolicies that select the pods, foreign ones included
    got_policies = json.loads(files[f"{base}/networkpolicies.json"])
    assert {p["metadata"]["name"] for p in got_policies} == {
        f"{workload}-default-deny",
        "foreign-allow-all",
    }
    assert all(p["metadata"]["managedFields"] for p in got_policies)
    # logs of every container: kwok serves none, so each read is an error entry
    index = json.loads(files["index.json"])
    entry = next(w for w in index["workloads"] if w["name"] == workload)
    assert entry["found"] is True
    log_errors = {e["item"]: e for e in entry["errors"] if "/logs/" in e["item"]}
    for container in CONTAINERS:
        item = f"{base}/logs/{workload}-pod/{container}.log"
        assert item not in files, container
        assert log_errors[item]["status"] >= 400, log_errors[item]
        assert log_errors[item]["message"], log_errors[item]
    assert f"{base}/guard-audit.jsonl" in files
    # a missing workload is recorded, the other still collected
    missing = next(w for w in index["workloads"] if w["name"] == "no-such-job")
    assert missing["found"] is False
    assert any(e["status"] == 404 for e in missing["errors"])
    bogus = next(w for w in index["workloads"] if w["kind"] == "Bogus")
    assert bogus["found"] is False and "not a workload kind" in bogus["errors"][0]["message"]
    assert index["collectionStarted"] <= index["collectionFinished"]

    # export through the CLI: verified, every file written
    out = tmp_path / "out"
    assert cli.export(_args(quarantine, out, ops, cluster)) == 0
    summary = capsys.readouterr().out
    assert ev.digest(blob) in summary and f"{len(files)} files" in summary
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    # a second export into the same folder refuses to overwrite
    assert cli.export(_args(quarantine, out, ops, cluster)) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    # a key obtained out of band that is not the signer's
    other = tmp_path / "other.pub"
    other.write_bytes(generate_signing_key().public_key_pem)
    assert cli.export(_args(quarantine, tmp_path / "o2", ops, cluster, other)) == 2
    assert "signed by a different key" in capsys.readouterr().err

    # tamper one stored chunk: its data alone, then with every digest annotation rewritten
    prefix = f"secureai-evidence-{quarantine}"
    chunk = cluster.kubectl_json("get", "secret", f"{prefix}-1", "-n", ops)
    data = bytearray(base64.b64decode(chunk["data"]["chunk"]))
    data[len(data) // 2] ^= 0x01
    tampered = bytes(data)
    count = int(chunk["metadata"]["annotations"][kev.ANN_COUNT])
    _replace_chunk(cluster, ops, chunk, tampered, None)
    err = _failed_export(cluster, quarantine, tmp_path / "t1", ops, capsys)
    assert "does not match its digest" in err

    new_blob = b"".join(
        tampered if i == 1 else _chunk_data(cluster, ops, f"{prefix}-{i}") for i in range(count)
    )
    forged = ev.digest(new_blob)
    for i in range(count):
        live = cluster.kubectl_json("get", "secret", f"{prefix}-{i}", "-n", ops)
        _replace_chunk(cluster, ops, live, base64.b64decode(live["data"]["chunk"]), forged)
    err = _failed_export(cluster, quarantine, tmp_path / "t2", ops, capsys)
    assert "ciphertext does not match the signed digest" in err

    # a missing chunk fails closed
    cluster.kubectl("delete", "secret", f"{prefix}-1", "-n", ops, "--wait=true")
    err = _failed_export(cluster, quarantine, tmp_path / "t3", ops, capsys)
    assert f"evidence of quarantine {quarantine}: chunk 1 is missing" in err


def _chunk_data(cluster: Cluster, ns: str, name: str) -> bytes:
    return base64.b64decode(cluster.kubectl_json("get", "secret", name, "-n", ns)["data"]["chunk"])


def _replace_chunk(
    cluster: Cluster, ns: str, live: dict[str, Any], data: bytes, digest: str | None
) -> None:
    """Immutable Secrets are tampered with by deleting and recreating them."""
    meta = live["metadata"]
    annotations = dict(meta["annotations"])
    if digest is not None:
        annotations[kev.ANN_DIGEST] = digest
    cluster.kubectl("delete", "secret", meta["name"], "-n", ns, "--wait=true")
    apply_yaml(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": live["type"],
            "immutable": True,
            "metadata": {
                "name": meta["name"],
                "namespace": ns,
                "labels": meta["labels"],
                "annotations": annotations,
            },
            "data": {"chunk": base64.b64encode(data).decode()},
        },
    )


def _failed_export(
    cluster: Cluster, quarantine: str, out: Path, ops: str, capsys: pytest.CaptureFixture[str]
) -> str:
    assert cli.export(_args(quarantine, out, ops, cluster)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secureai: "), captured.err
    assert "Traceback" not in captured.err
    assert not out.exists() or not any(out.iterdir())
    return lines[0]
