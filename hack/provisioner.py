"""Minimal dynamic PV provisioner for the local test cluster (started by hack/cluster.sh).

For every PVC whose StorageClass names our provisioner (default ``secureai.dev/local``) and
that is not bound yet, it creates a PersistentVolume pre-bound to the claim (``claimRef``);
kube-controller-manager's PV binder then binds the pair and the claim becomes ``Bound``.
When such a PV is ``Released`` and its reclaim policy is ``Delete`` it deletes it. Nothing is
mounted on a kwok node; on the real node the PV's ``hostPath`` directory under the cluster
state dir is mounted for real: it is created here, owned by the workloads' UID and GID (the
policy's runAsUser/runAsGroup, 65532), and removed with its PV.

It watches PVCs and additionally re-lists every few seconds, so a missed watch event only
delays a claim, never loses it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"

log = logging.getLogger("provisioner")
WORKLOAD_UID = 65532  # the policy's default runAsUser and runAsGroup


class Provisioner:
    def __init__(self, name: str, volume_root: str) -> None:
        self.name = name
        self.volume_root = volume_root.rstrip("/")
        self.core = client.CoreV1Api()
        self.storage = client.StorageV1Api()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def make_dir(self, pv_name: str) -> None:
        path = os.path.join(self.volume_root, pv_name)
        os.makedirs(path, mode=0o770, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(path, WORKLOAD_UID, WORKLOAD_UID)
        os.chmod(path, 0o770)

    def remove_dir(self, pv_name: str) -> None:
        shutil.rmtree(os.path.join(self.volume_root, pv_name), ignore_errors=True)

    def our_classes(self) -> dict[str, client.V1StorageClass]:
        classes = self.storage.list_storage_class().items
        return {sc.metadata.name: sc for sc in classes if sc.provisioner == self.name}

    def reconcile_claim(self, pvc: client.V1PersistentVolumeClaim, classes: dict) -> None:
        meta, spec = pvc.metadata, pvc.spec
        if meta.deletion_timestamp or spec.volume_name or not spec.storage_class_name:
            return
        sc = classes.get(spec.storage_class_name)
        if sc is None:
            return
        pv_name = f"pvc-{meta.uid}"
        requests = (spec.resources.requests or {}) if spec.resources else {}
        size = requests.get("storage", "1Gi")
        pv = client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(
                name=pv_name,
                annotations={ANN_PROVISIONED_BY: self.name},
                labels={"secureai.dev/provisioned-by": "local-provisioner"},
            ),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": size},
                access_modes=spec.access_modes or ["ReadWriteOnce"],
                volume_mode=spec.volume_mode or "Filesystem",
                storage_class_name=sc.metadata.name,
                persistent_volume_reclaim_policy=sc.reclaim_policy or "Delete",
                mount_options=sc.mount_options,
                claim_ref=client.V1ObjectReference(
                    api_version="v1",
                    kind="PersistentVolumeClaim",
                    namespace=meta.namespace,
                    name=meta.name,
                    uid=meta.uid,
                ),
                host_path=client.V1HostPathVolumeSource(
                    path=f"{self.volume_root}/{pv_name}", type="DirectoryOrCreate"
                ),
            ),
        )
        with self.lock:
            try:
                self.core.read_persistent_volume(pv_name)
                return  # created by an earlier pass; the PV binder finishes the job
            except ApiException as exc:
                if exc.status != 404:
                    raise
            self.make_dir(pv_name)
            try:
                self.core.create_persistent_volume(pv)
                log.info(
                    "created %s for %s/%s (%s, %s)",
                    pv_name,
                    meta.namespace,
                    meta.name,
                    sc.metadata.name,
                    size,
                )
            except ApiException as exc:
                if exc.status != 409:  # already exists: an earlier pass created it
                    raise

    def reclaim(self) -> None:
        for pv in self.core.list_persistent_volume().items:
            ann = pv.metadata.annotations or {}
            if ann.get(ANN_PROVISIONED_BY) != self.name or pv.metadata.deletion_timestamp:
                continue
            phase = pv.status.phase if pv.status else None
            policy = pv.spec.persistent_volume_reclaim_policy
            if phase in ("Released", "Failed") and policy == "Delete":
                try:
                    self.core.delete_persistent_volume(pv.metadata.name)
                    self.remove_dir(pv.metadata.name)
                    log.info("deleted released %s", pv.metadata.name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def resync(self) -> None:
        classes = self.our_classes()
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            self.reconcile_claim(pvc, classes)
        self.reclaim()

    def resync_loop(self, period: float) -> None:
        while not self.stop.is_set():
            try:
                self.resync()
            except Exception:
                log.exception("resync failed")
            self.stop.wait(period)

    def watch_claims(self) -> None:
        while not self.stop.is_set():
            try:
                classes = self.our_classes()
                w = watch.Watch()
                for event in w.stream(
                    self.core.list_persistent_volume_claim_for_all_namespaces, timeout_seconds=60
                ):
                    if self.stop.is_set():
                        w.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        pvc = event["object"]
                        if pvc.spec.storage_class_name not in classes:
                            classes = self.our_classes()  # a class may have been added
                        self.reconcile_claim(pvc, classes)
            except Exception:
                log.exception("watch failed; restarting")
                self.stop.wait(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--provisioner", default="secureai.dev/local")
    parser.add_argument("--volume-root", default="/var/lib/secureai-local-pv")
    parser.add_argument("--resync-seconds", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    prov = Provisioner(args.provisioner, args.volume_root)

    def shutdown(signum, _frame):
        log.info("signal %s: stopping", signum)
        prov.stop.set()
        sys.exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    threading.Thread(target=prov.resync_loop, args=(args.resync_seconds,), daemon=True).start()
    log.info("provisioner %s started", args.provisioner)
    prov.watch_claims()
    return 0


if __name__ == "__main__":
    sys.exit(main())
