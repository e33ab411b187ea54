"""secureai guard: TLS-terminating, redacting, rate-limiting sidecar for model servers.

``run_guard`` is what ``secureai guard`` and ``python -m secureai.guard`` call. Heavy imports
(aiohttp, prometheus) happen only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def run_guard(config_path: str, insecure_listen: bool = False) -> int:
    """Run until SIGTERM/SIGINT. Exit 2 with a one-line reason on stderr for a bad config."""
    from secureai.guard.config import ConfigError, load_config  # noqa: PLC0415
    from secureai.guard.proxy import StartupError, serve, setup_logging  # noqa: PLC0415

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"secureai guard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging()
    try:
        asyncio.run(serve(cfg, insecure_listen=insecure_listen))
    except StartupError as exc:
        print(f"secureai guard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        metavar="PATH",
        help="guard.json (mounted at /etc/secureai/guard/guard.json in the pod)",
    )
    parser.add_argument(
        "--insecure-listen",
        action="store_true",
        help="serve plain HTTP when the TLS files are absent (tests and local runs only)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="secureai guard",
        description="TLS-terminating redacting reverse proxy in front of a model server",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guard(args.config, args.insecure_listen)
