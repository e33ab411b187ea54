"""Reconcile steps that need the cluster: serving certificates and dataset storage checks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from secureai.api import Policy, SecureInferenceService, SecureTrainingJob
from secureai.clock import Clock, iso
from secureai.controllers import metrics
from secureai.controllers.state import ChildKey, Entry
from secureai.k8s.certs import CertificateAuthority, storage_class_of_claim
from secureai.k8s.client import KubeClient
from secureai.render.inference import operator_issues_tls, service_dns_names, tls_secret_name


class ClusterHooks:
    def __init__(
        self, kube: KubeClient, policy: Policy, operator_namespace: str, clock: Clock
    ) -> None:
        self.kube = kube
        self.policy = policy
        self.clock = clock
        self.ca = CertificateAuthority(kube, operator_namespace, clock=clock)

    async def prepare(
        self,
        entry: Entry,
        desired: list[dict[str, Any]],
        live: Mapping[ChildKey, dict[str, Any]],
    ) -> str | None:
        model = entry.model
        if isinstance(model, SecureTrainingJob):
            return await self._check_datasets(model)
        if isinstance(model, SecureInferenceService) and operator_issues_tls(model):
            name = tls_secret_name(model)
            manifest = next(
                (m for m in desired if m["kind"] == "Secret" and m["metadata"]["name"] == name),
                None,
            )
            if manifest is None:  # contained: no serving certificate while quarantined
                entry.tls_not_after = None
                return None
            data, not_after = await self.ca.serving_secret_data(
                live.get(("Secret", name)),
                service_dns_names(model, self.ca.cluster_domain),
                timedelta(seconds=self.policy.certificate_lifetime_seconds),
            )
            manifest["data"] = data
            entry.tls_not_after = iso(not_after)
            metrics.CERT_EXPIRY.labels(entry.namespace, name).set(not_after.timestamp())
        return None

    async def _check_datasets(self, model: SecureTrainingJob) -> str | None:
        encrypted = self.policy.encrypted_storage_classes
        for i, dataset in enumerate(model.spec.datasets or []):
            field = f"spec.datasets[{i}].claimName"
            klass = await storage_class_of_claim(
                self.kube, model.metadata.namespace, dataset.claim_name
            )
            if klass is None:
                return f"{field}: PVC {dataset.claim_name!r} does not exist"
            if klass not in encrypted:
                return (
                    f"{field}: PVC {dataset.claim_name!r} is on StorageClass {klass!r}, "
                    f"which is not encrypted (allowed: {', '.join(encrypted)})"
                )
        return None

    def needs_refresh(self, entry: Entry) -> bool:
        """A serving certificate past 2/3 of its life must be reissued."""
        if entry.tls_not_after is None:
            return False
        expiry = datetime.strptime(entry.tls_not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        lifetime = timedelta(seconds=self.policy.certificate_lifetime_seconds)
        return self.clock.now() >= expiry - lifetime / 3
