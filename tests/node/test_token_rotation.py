"""The kubelet rotates a workload's projected token before it expires (issue 12, point 5).

A rotation takes 80 % of the token's lifetime (480 s of the default 600 s), so the pod starts
with the first real-node test (the session fixture `token_watch`) and this test runs last in
the session: in `make test` the rest of the suite covers the wait. The pod logs every token it
sees (issue and expiry times only); the test reads that history.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from nodekit import TokenWatch

from clusterkit import Cluster, wait_for


def _history(cluster: Cluster, watch: TokenWatch) -> list[dict[str, Any]]:
    out = cluster.kubectl("-n", watch.namespace, "logs", watch.pod, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_kubelet_rotates_the_projected_token_before_expiry(
    cluster: Cluster, token_watch: TokenWatch
) -> None:
    remaining = token_watch.started + token_watch.lifetime + 30 - time.monotonic()
    history = wait_for(
        lambda: len(found := _history(cluster, token_watch)) >= 2 and found,
        timeout=max(remaining, 30),
        interval=5,
        description="a second token in the pod (the kubelet's rotation)",
    )
    first = history[0]
    assert first["aud"] == [token_watch.audience]
    assert first["exp"] - first["iat"] == token_watch.lifetime
    for old, new in itertools.pairwise(history):
        assert new["iat"] > old["iat"]
        # the new token was in the pod before the old one expired
        assert new["seen"] < old["exp"], (old, new)
    print(
        "token rotation: "
        + ", ".join(
            f"iat+{h['iat'] - first['iat']}s seen+{h['seen'] - first['iat']}s" for h in history
        )
    )
