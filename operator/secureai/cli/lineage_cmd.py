"""``secureai lineage show|verify``: the signed provenance of training runs (docs/provenance.md).

Exit codes: 0 every record verified; 1 a record does not verify (modified, or signed by another
key); 2 bad input (no such record, an unreadable file or key, no cluster), one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from secureai.controllers.provenance import Verified

# The record's item names (controllers/provenance.py, which is imported only when run).
STATEMENT_ITEM = "provenance.dsse.json"
EXIT_FAILED = 1
EXIT_USAGE = 2
_MAX_FILE = 4 << 20


class _Usage(Exception):
    """Bad input: one line."""


def _read(path: str, what: str) -> bytes:
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(_MAX_FILE + 1)
    except OSError as exc:
        raise _Usage(f"{what} {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise _Usage(f"{what} {path}: too large")
    return data


def _records_from_file(path: str) -> list[tuple[str, dict[str, str]]]:
    """A record ConfigMap (YAML or JSON, as `kubectl get -o yaml` prints it), a List of them,
    or a bare DSSE envelope."""
    try:
        doc = yaml.safe_load(_read(path, "record file"))
    except yaml.YAMLError:
        raise _Usage(f"record file {path}: not YAML or JSON") from None
    if not isinstance(doc, dict):
        raise _Usage(f"record file {path}: not a ConfigMap or a DSSE envelope")
    if "payloadType" in doc:
        return [(path, {STATEMENT_ITEM: json.dumps(doc)})]
    items = doc.get("items") if doc.get("kind") == "List" else [doc]
    out = []
    for item in items or []:
        data = item.get("data") if isinstance(item, dict) else None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise _Usage(f"record file {path}: a ConfigMap without string data")
        out.append((str((item.get("metadata") or {}).get("name") or path), data))
    if not out:
        raise _Usage(f"record file {path}: no record in it")
    return out


async def _from_cluster(
    args: argparse.Namespace, need_key: bool
) -> tuple[list[tuple[str, dict[str, str]]], bytes | None]:
    from secureai.controllers.provenance import (  # noqa: PLC0415 - only when run
        LABEL_NAMESPACE,
        LABEL_RECORD,
        LABEL_WORKLOAD,
        PUBLIC_KEY_CONFIGMAP,
        PUBLIC_KEY_ITEM,
    )
    from secureai.k8s.client import ApiError, KubeClient, load_credentials  # noqa: PLC0415

    try:
        creds = load_credentials(args.kubeconfig or os.environ.get("KUBECONFIG"))
    except Exception as exc:  # the kubernetes loader raises many kinds
        raise _Usage(f"no cluster: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    ns = args.operator_namespace
    async with KubeClient(creds) as kube:
        try:
            key = None
            if need_key:
                cm = await kube.get("ConfigMap", ns, PUBLIC_KEY_CONFIGMAP)
                pem = ((cm or {}).get("data") or {}).get(PUBLIC_KEY_ITEM)
                if not pem:
                    raise _Usage(
                        f"no published provenance key (ConfigMap {ns}/"
                        f"{PUBLIC_KEY_CONFIGMAP}); pass --key"
                    )
                key = pem.encode()
            if args.record:
                body = await kube.get("ConfigMap", ns, args.record)
                bodies = [body] if body is not None else []
            else:
                wns, _, wname = args.job.partition("/")
                selected = f"{LABEL_RECORD}=true,{LABEL_NAMESPACE}={wns},{LABEL_WORKLOAD}={wname}"
                bodies = await kube.list("ConfigMap", ns, selected)
        except ApiError as exc:
            raise _Usage(f"cannot read the records: {exc}") from None
    if not bodies:
        what = f"record {ns}/{args.record}" if args.record else f"record of {args.job}"
        raise _Usage(f"no {what}")
    return [(b["metadata"]["name"], dict(b.get("data") or {})) for b in bodies], key


def _target(args: argparse.Namespace) -> None:
    given = [x for x in (args.job, args.record, args.file) if x]
    if len(given) != 1:
        raise _Usage("name exactly one of NAMESPACE/JOB, --record or --file")
    if args.job:
        ns, sep, name = args.job.partition("/")
        if not sep or not ns or not name or "/" in name:
            raise _Usage(f"{args.job!r}: expected NAMESPACE/NAME of a SecureTrainingJob")


def _run(args: argparse.Namespace) -> int:
    from secureai.controllers.provenance import verify_record  # noqa: PLC0415 - only when run
    from secureai.crypto.provenance import (  # noqa: PLC0415
        SignatureError,
        public_key_fingerprint,
    )

    try:
        _target(args)
        key = _read(args.key, "key").strip() + b"\n" if args.key else None
        if args.file:
            records = _records_from_file(args.file)
            if key is None:
                raise _Usage("--file needs --key (the operator's public key, PEM)")
        else:
            records, published = asyncio.run(_from_cluster(args, need_key=key is None))
            key = key or published
        assert key is not None
        try:
            public_key_fingerprint(key)
        except SignatureError as exc:
            raise _Usage(f"key: {exc}") from None
    except _Usage as exc:
        print(f"secureai: lineage: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = 0
    shown: list[dict[str, Any]] = []
    for name, data in sorted(records):
        try:
            verified = verify_record(data, key, name)
        except SignatureError as exc:
            print(f"secureai: lineage: {name}: NOT VERIFIED: {exc}", file=sys.stderr)
            failed += 1
            continue
        shown.append(_report(args, verified))
    if args.command_name == "show":
        if args.output == "json":
            print(json.dumps(shown, indent=2, sort_keys=True))
        else:
            for item in shown:
                _print_text(item)
    else:
        for item in shown:
            print(f"{item['record']}: verified ({item['statementDigest']})")
    return EXIT_FAILED if failed else 0


def _report(args: argparse.Namespace, verified: Verified) -> dict[str, Any]:
    from secureai.judge import lifecycle  # noqa: PLC0415

    facts = lifecycle.summary(verified.statement)
    item: dict[str, Any] = {
        "record": verified.name,
        "statementDigest": verified.digest,
        "verified": True,
        "outputDeletedOn": verified.deleted_on,
        **facts,
    }
    if args.command_name == "show" and args.output == "json":
        item["statement"] = verified.statement
    return item


def _print_text(item: dict[str, Any]) -> None:
    rows = [
        ("record", item["record"]),
        ("verified", f"yes ({item['statementDigest']})"),
        ("training job", f"{item['trainingJob']} (generation {item['generation']})"),
        ("outcome", item["outcome"]),
        ("started / finished", f"{item['startedOn']} / {item['finishedOn']}"),
        ("image", item["image"]),
        ("datasets", ", ".join(item["datasets"]) or "-"),
        ("spec digest", item["specDigest"]),
        ("policy digest", item["policyDigest"]),
        ("nodes", ", ".join(f"{n} ({p or '-'})" for n, p in item["nodes"].items()) or "-"),
        ("output", f"{item['subject']} ({item['subjectDigest']}, identity)"),
        ("delete output after", item["deleteAfter"] or "-"),
        ("output deleted on", item["outputDeletedOn"] or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print()


def add_lineage_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lineage",
        help="show or verify the signed provenance of training runs",
        description="Read a training run's signed provenance record (in-toto, SLSA v1) from "
        "the cluster or a file and verify it. Exit 0: verified; 1: a record does not verify; "
        "2: bad input.",
    )
    sub = parser.add_subparsers(dest="command_name", required=True)
    for name, text in (("show", "print the record (verified)"), ("verify", "verify the record")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job", nargs="?", help="NAMESPACE/NAME of the SecureTrainingJob")
        p.add_argument("--record", help="the record ConfigMap's name instead")
        p.add_argument("--file", help="a record exported to a file, or a DSSE envelope")
        p.add_argument(
            "--key", help="the operator's public key (PEM); default: the one it published"
        )
        p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
        p.add_argument(
            "--operator-namespace",
            default="secureai-system",
            help="where the records are (default secureai-system)",
        )
        if name == "show":
            p.add_argument("-o", "--output", choices=("text", "json"), default="text")
        p.set_defaults(func=_run)
    return parser
