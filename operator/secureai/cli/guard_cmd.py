"""``secureai guard``: the inference guard sidecar (see docs/guard.md)."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from secureai.guard import run_guard  # noqa: PLC0415 - keep the CLI's import light

    return run_guard(args.config, args.insecure_listen)


def add_guard_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``guard --config PATH [--insecure-listen]``; ``args.func(args)`` returns an exit code."""
    from secureai.guard import add_arguments  # noqa: PLC0415

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "guard",
        help="run the TLS-terminating, redacting guard sidecar",
        description="TLS-terminating redacting reverse proxy in front of a model server",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)
    return parser
