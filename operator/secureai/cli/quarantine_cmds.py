"""`secureai quarantine create|list|release|evidence`: the same objects as kubectl.

create and release write the Quarantine's spec as the user (never its status); list reads.
Exit 0 on success, 2 with one `secureai: <reason>` line on bad input or a refused request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError

from secureai.api import API_VERSION
from secureai.api.errors import one_line
from secureai.api.quarantine import Quarantine
from secureai.cli import quarantine_evidence
from secureai.clock import SystemClock
from secureai.k8s.client import ApiError, KubeClient, load_credentials
from secureai.k8s.resources import QUARANTINE

EXIT_FAILURE = 2


class QuarantineInputError(Exception):
    """Bad input: reported as one line, exit 2."""


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise QuarantineInputError(f"--selector: {part!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def manifest(args: argparse.Namespace) -> dict[str, Any]:
    """The Quarantine that `create` would submit, validated by the API models."""
    match: dict[str, Any] = {}
    workloads = []
    for ref in args.workload or []:
        namespace, sep, name = ref.partition("/")
        if not sep:
            raise QuarantineInputError(f"--workload: {ref!r} is not NAMESPACE/NAME")
        workloads.append({"namespace": namespace, "name": name})
    for key, values in (
        ("workloads", workloads),
        ("namespaces", args.in_namespace or []),
        ("imageDigests", args.image_digest or []),
        ("modelDigests", args.model_digest or []),
        ("datasetDigests", args.dataset_digest or []),
    ):
        if values:
            match[key] = values
    if args.selector:
        match["selector"] = {"matchLabels": _pairs(args.selector)}
    if not match:
        raise QuarantineInputError(
            "name at least one of --workload, --in-namespace, --selector, --image-digest, "
            "--model-digest, --dataset-digest"
        )
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Quarantine",
        "metadata": {"name": args.name},
        "spec": {
            "match": match,
            "action": args.action,
            "reason": args.reason,
            "collectEvidence": not args.no_evidence,
            "blockAdmission": not args.no_block,
        },
    }
    try:
        Quarantine.model_validate(body)
    except ValidationError as exc:
        raise QuarantineInputError(one_line(exc)) from None
    return body


async def _client_call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    try:
        creds = load_credentials(args.kubeconfig)
    except Exception as exc:  # the kubernetes loader raises many types; say why in one line
        raise QuarantineInputError(f"cannot load cluster credentials: {exc}") from None
    async with KubeClient(creds) as kube:
        return await kube.request(method, path, **kw)


def _run(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    try:
        return asyncio.run(_client_call(args, method, path, **kw))
    except ApiError as exc:
        raise QuarantineInputError(f"the API server refused it: {exc}") from None


def cmd_create(args: argparse.Namespace) -> int:
    body = manifest(args)
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
        return 0
    _run(args, "POST", QUARANTINE.path(), body=body)
    print(f"quarantine.secureai.dev/{args.name} created")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    _run(
        args,
        "PATCH",
        QUARANTINE.path(None, args.name),
        body={"spec": {"released": True}},
        content_type="application/merge-patch+json",
    )
    print(f"quarantine.secureai.dev/{args.name} released")
    return 0


def _age(stamp: str | None) -> str:
    if not stamp:
        return "?"
    seconds = int(
        (SystemClock().now() - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    )
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def cmd_list(args: argparse.Namespace) -> int:
    items = _run(args, "GET", QUARANTINE.path()).get("items", [])
    if args.output == "json":
        print(json.dumps(items, indent=2, sort_keys=True))
        return 0
    rows = [("NAME", "ACTION", "PHASE", "CONTAINED", "EVIDENCE", "AGE", "REASON")]
    for item in sorted(items, key=lambda i: i["metadata"]["name"]):
        spec, status = item.get("spec") or {}, item.get("status") or {}
        rows.append(
            (
                item["metadata"]["name"],
                str(spec.get("action", "Isolate")),
                "Released" if spec.get("released") else str(status.get("phase") or "Pending"),
                str(status.get("containedCount", 0)),
                "yes" if status.get("evidence") else "-",
                _age(item["metadata"].get("creationTimestamp")),
                str(spec.get("reason", ""))[:60],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _guarded(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = func(args)
        except QuarantineInputError as exc:
            print(f"secureai: {str(exc).splitlines()[0]}", file=sys.stderr)
            return EXIT_FAILURE
        return result

    return run


def add_quarantine_parser(sub: Any) -> None:
    parser = sub.add_parser("quarantine", help="contain workloads (incident response)")
    commands = parser.add_subparsers(dest="quarantine_command", required=True)

    p = commands.add_parser("create", help="create a Quarantine")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--reason", required=True, help="why (free text, shown everywhere)")
    p.add_argument("--action", choices=("Isolate", "Stop"), default="Isolate")
    p.add_argument("--workload", action="append", metavar="NS/NAME", help="a workload")
    p.add_argument("--in-namespace", action="append", metavar="NS", help="every workload of NS")
    p.add_argument("--selector", metavar="K=V,...", help="workloads with these labels")
    p.add_argument("--image-digest", action="append", metavar="sha256:HEX")
    p.add_argument("--model-digest", action="append", metavar="sha256:HEX")
    p.add_argument("--dataset-digest", action="append", metavar="sha256:HEX")
    p.add_argument("--no-evidence", action="store_true", help="do not collect evidence")
    p.add_argument("--no-block", action="store_true", help="do not refuse new matches")
    p.add_argument("--dry-run", action="store_true", help="print the object, create nothing")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    p.set_defaults(func=_guarded(cmd_create))

    p = commands.add_parser("list", help="list Quarantines")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    p.set_defaults(func=_guarded(cmd_list))

    p = commands.add_parser("release", help="lift a Quarantine (the object and evidence stay)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    p.set_defaults(func=_guarded(cmd_release))

    p = commands.add_parser("evidence", help="export and verify a Quarantine's evidence")
    quarantine_evidence.add_arguments(p)
