"""``secureai audit``: a read-only posture report of the cluster's AI workloads.

Exit codes: 0 when no finding reaches ``--fail-on`` (default ``high``), 1 when one does, 2 for
bad input (flags, kubeconfig, policy file, unreachable API server), with one line on stderr.
The JSON schema (``apiVersion: secureai.dev/audit/v1``) is documented in docs/audit.md.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from secureai.api import Policy
from secureai.clock import SystemClock
from secureai.judge.posture import CONTROLS, SEVERITIES, Posture, judge, reaches

API_VERSION = "secureai.dev/audit/v1"
FAIL_ON = (*SEVERITIES, "none")
COLOURS = {"low": "#4c78a8", "medium": "#f2a900", "high": "#e45756", "critical": "#8b0000"}
RESULT_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "unknown": "#757575", "n/a": "#9e9e9e"}


class AuditInputError(Exception):
    """Bad input to the audit; the message is one line."""


def to_json(posture: Posture, namespace: str | None, fail_on: str, now: datetime) -> dict[str, Any]:
    """The report as the versioned JSON document (docs/audit.md)."""
    counts = posture.counts()
    return {
        "apiVersion": API_VERSION,
        "kind": "AuditReport",
        "generatedAt": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "scope": {"namespace": namespace},
        "failOn": fail_on,
        "failed": any(reaches(f.severity, fail_on) for f in posture.findings),
        "summary": {
            "findings": counts,
            "workloads": len(posture.workloads),
            "shadow": len(posture.shadow),
        },
        "workloads": [
            {
                "kind": w.kind,
                "namespace": w.namespace,
                "name": w.name,
                "controls": {
                    c.control: {"result": c.result, "detail": c.detail, "finding": c.finding}
                    for c in w.controls
                },
            }
            for w in posture.workloads
        ],
        "shadow": [
            {
                "kind": s.kind,
                "namespace": s.namespace,
                "name": s.name,
                "signals": list(s.signals),
                "lacks": list(s.lacks),
            }
            for s in posture.shadow
        ],
        "findings": [
            {
                "id": f.id,
                "severity": f.severity,
                "control": f.control,
                "subject": f.subject,
                "message": f.message,
                "fix": f.fix,
            }
            for f in posture.findings
        ],
        "skipped": list(posture.skipped),
    }


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def to_table(posture: Posture) -> str:
    out: list[str] = []
    counts = posture.counts()
    out.append(
        "findings: "
        + ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES))
        + f"; {len(posture.workloads)} managed workload(s), {len(posture.shadow)} shadow"
    )
    if posture.workloads:
        rows = [["WORKLOAD", *[c.upper() for c in CONTROLS]]]
        for w in posture.workloads:
            rows.append([f"{w.kind}/{w.namespace}/{w.name}", *[c.result for c in w.controls]])
        out += ["", _columns(rows)]
    if posture.shadow:
        out += ["", "SHADOW AI"]
        for s in posture.shadow:
            out.append(f"  {s.kind}/{s.namespace}/{s.name}: {'; '.join(s.signals)}")
            out += [f"    lacks: {lack}" for lack in s.lacks]
    if posture.findings:
        rows = [["ID", "SEVERITY", "SUBJECT", "MESSAGE"]]
        rows += [[f.id, f.severity, f.subject, f.message] for f in posture.findings]
        out += ["", _columns(rows)]
    if posture.skipped:
        out += ["", *posture.skipped]
    return "\n".join(out) + "\n"


def _chart(counts: dict[str, int]) -> str:
    """An inline SVG bar chart of findings per severity."""
    top = max([1, *counts.values()])
    bars = []
    for i, sev in enumerate(reversed(SEVERITIES)):
        width = int(360 * counts[sev] / top)
        y = 10 + i * 34
        bars.append(
            f'<text x="0" y="{y + 18}" font-size="14">{sev}</text>'
            f'<rect class="bar" data-severity="{sev}" x="80" y="{y}" width="{max(width, 2)}" '
            f'height="24" fill="{COLOURS[sev]}"/>'
            f'<text x="{86 + width}" y="{y + 18}" font-size="14">{counts[sev]}</text>'
        )
    return (
        '<svg id="summary-chart" xmlns="http://www.w3.org/2000/svg" width="500" height="150" '
        'role="img" aria-label="findings per severity">' + "".join(bars) + "</svg>"
    )


def to_html(report: dict[str, Any], posture: Posture) -> str:
    e = html.escape
    rows = []
    for w in posture.workloads:
        cells = "".join(
            f'<td style="color:{RESULT_COLOURS[c.result]}" title="{e(c.detail)}">{e(c.result)}</td>'
            for c in w.controls
        )
        rows.append(f"<tr><td>{e(w.kind)}/{e(w.namespace)}/{e(w.name)}</td>{cells}</tr>")
    heads = "".join(f"<th>{e(c)}</th>" for c in CONTROLS)
    findings = "".join(
        f'<tr><td>{e(f.id)}</td><td style="color:{COLOURS[f.severity]}">{e(f.severity)}</td>'
        f"<td>{e(f.subject)}</td><td>{e(f.message)}</td><td>{e(f.fix)}</td></tr>"
        for f in posture.findings
    )
    shadow = "".join(
        f"<li><b>{e(s.kind)}/{e(s.namespace)}/{e(s.name)}</b>: {e('; '.join(s.signals))}"
        f"<ul>{''.join(f'<li>lacks: {e(x)}</li>' for x in s.lacks)}</ul></li>"
        for s in posture.shadow
    )
    skipped = "".join(f"<li>{e(s)}</li>" for s in posture.skipped)
    scope = report["scope"]["namespace"] or "all namespaces"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>secureai audit</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 13px; }}
</style></head><body>
<h1>secureai audit</h1>
<p>{e(report["generatedAt"])}, {e(scope)}; fail on: {e(report["failOn"])}</p>
<h2>Findings per severity</h2>
{_chart(report["summary"]["findings"])}
<h2>Managed workloads ({len(posture.workloads)})</h2>
<table id="workloads"><tr><th>workload</th>{heads}</tr>{"".join(rows)}</table>
<h2>Shadow AI ({len(posture.shadow)})</h2><ul id="shadow">{shadow}</ul>
<h2>Findings ({len(posture.findings)})</h2>
<table id="findings"><tr><th>ID</th><th>severity</th><th>subject</th><th>message</th>
<th>fix</th></tr>{findings}</table>
<h2>Checks not run</h2><ul id="skipped">{skipped}</ul>
</body></html>
"""


async def _gather_and_judge(args: argparse.Namespace, policy: Policy, now: datetime) -> Posture:
    # the API client (kubernetes, aiohttp) only for this command: the CLI starts fast
    from secureai.k8s.client import KubeClient, load_credentials  # noqa: PLC0415
    from secureai.k8s.reader import Unreachable, gather  # noqa: PLC0415

    try:
        credentials = load_credentials(args.kubeconfig)
    except Exception as exc:  # the kubernetes package raises many kinds for a bad config
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditInputError(f"kubeconfig: {first}") from None
    async with KubeClient(credentials) as kube:
        try:
            gathered = await gather(kube, args.namespace, args.operator_namespace)
        except Unreachable as exc:
            raise AuditInputError(str(exc)) from None
    return judge(gathered, policy, now, args.namespace)


def cmd_audit(args: argparse.Namespace) -> int:
    now = SystemClock().now()
    policy = args.load_policy(args.policy)  # cli.main's loader: bad input exits 2 there
    try:
        posture = asyncio.run(_gather_and_judge(args, policy, now))
    except AuditInputError as exc:
        print(f"secureai: {exc}", file=sys.stderr)
        return 2
    report = to_json(posture, args.namespace, args.fail_on, now)
    if args.output == "json":
        text = json.dumps(report, indent=2) + "\n"
    elif args.output == "html":
        text = to_html(report, posture)
    else:
        text = to_table(posture)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"secureai: {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 1 if report["failed"] else 0


def add_audit_parser(
    subparsers: Any, load_policy: Callable[[str | None], Policy]
) -> argparse.ArgumentParser:
    """Add ``audit``; `load_policy` reads ``--policy`` (cli.main's, with its input errors)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="report the posture of the cluster's AI workloads (read-only)",
        description="Judge every managed workload's controls from the live objects, find "
        "unmanaged AI workloads, and report cluster findings. Reads only.",
    )
    p.add_argument("--namespace", help="audit only this namespace (default: all)")
    p.add_argument("-o", "--output", choices=("table", "json", "html"), default="table")
    p.add_argument("--out", metavar="FILE", help="write the report here (default: stdout)")
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="high",
        help="exit 1 when a finding reaches this severity (default: high)",
    )
    p.add_argument("--policy", help="cluster policy YAML (default: built-in defaults)")
    p.add_argument("--kubeconfig", help="default: $KUBECONFIG, then the in-cluster account")
    p.add_argument(
        "--operator-namespace",
        default=os.environ.get("SECUREAI_NAMESPACE") or "secureai-system",
        help="where the operator runs and keeps its CA (default: $SECUREAI_NAMESPACE "
        "or secureai-system)",
    )
    p.set_defaults(func=cmd_audit, load_policy=load_policy)
    return p
