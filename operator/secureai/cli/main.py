"""The `secureai` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from secureai import __version__
from secureai.api import Policy, Workload, parse_workload
from secureai.api.crd import all_crds
from secureai.api.errors import one_line
from secureai.cli.audit_cmd import add_audit_parser
from secureai.cli.crypto_cmds import add_dataset_parser, add_model_parser
from secureai.cli.dataset_pii_cmds import add_dataset_pii_commands
from secureai.cli.guard_cmd import add_guard_parser
from secureai.cli.lineage_cmd import add_lineage_parser
from secureai.cli.quarantine_cmds import add_quarantine_parser
from secureai.render import PolicyViolation, render, to_yaml

EXIT_USAGE = 2


class InputError(Exception):
    """Bad user input; the message is one line."""


def load_documents(path: str) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"{path}: broken YAML{where}: {problem}") from None
    if not docs:
        raise InputError(f"{path}: no YAML document found")
    for doc in docs:
        if not isinstance(doc, dict):
            raise InputError(f"{path}: a document is not a mapping")
    return docs


def load_policy(path: str | None) -> Policy:
    if path is None:
        return Policy()
    try:
        return Policy.from_yaml(path)
    except ValidationError as exc:
        raise InputError(f"{path}: policy: {one_line(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}: policy: broken YAML{where}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: policy: not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: policy: {exc}") from None


def parse(doc: dict[str, Any], path: str) -> Workload:
    try:
        return parse_workload(doc)
    except ValidationError as exc:
        raise InputError(f"{path}: {one_line(exc)}") from None
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def cmd_render(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    manifests: list[dict[str, Any]] = []
    for doc in load_documents(args.file):
        cr = parse(doc, args.file)
        try:
            manifests += render(cr, policy)
        except PolicyViolation as exc:
            raise InputError(f"{args.file}: {exc}") from None
    sys.stdout.write(to_yaml(manifests))
    return 0


def crd_files() -> dict[str, str]:
    return {f"{c['metadata']['name']}.yaml": to_yaml([c]) for c in all_crds()}


def cmd_crds(args: argparse.Namespace) -> int:
    files = crd_files()
    if args.check:
        folder = Path(args.check)
        stale = sorted(
            name
            for name, text in files.items()
            if not (folder / name).is_file() or (folder / name).read_text() != text
        )
        extra = sorted(p.name for p in folder.glob("*.yaml") if p.name not in files)
        if stale or extra:
            print(
                f"secureai: {folder}/ differs from the models ({', '.join(stale + extra)}); "
                "run `make crds`",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.out_dir:
        folder = Path(args.out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
        return 0
    sys.stdout.write(to_yaml(all_crds()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from secureai.controllers.main import run  # noqa: PLC0415 - kopf only for `run`

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secureai", description="Secure-by-construction AI workloads on Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"secureai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="print the children the operator would create (offline)")
    p.add_argument("-f", "--file", required=True, help="SecureTrainingJob/Service YAML")
    p.add_argument("--policy", help="cluster policy YAML (default: built-in defaults)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("crds", help="print the CustomResourceDefinitions")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--out-dir", help="write one file per CRD into this folder")
    group.add_argument("--check", metavar="DIR", help="exit 1 if DIR differs from the models")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser("run", help="run the operator against the current kubeconfig")
    p.add_argument("--policy", help="cluster policy YAML (default: $SECUREAI_POLICY_FILE)")
    p.add_argument("--namespace", action="append", help="watch only these namespaces")
    p.add_argument("--health-port", type=int, default=8081, help="liveness/readiness port")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port")
    p.add_argument("--peering", default=None, help="leader Lease name (for HA replicas)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_run)

    _add_delegated(sub)
    return parser


def _add_delegated(sub: Any) -> None:
    """Subcommands built by their own modules."""
    add_dataset_pii_commands(add_dataset_parser(sub))
    add_model_parser(sub)
    add_guard_parser(sub)
    add_audit_parser(sub, load_policy)
    add_lineage_parser(sub)
    add_quarantine_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except InputError as exc:
        print(f"secureai: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
