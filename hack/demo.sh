#!/usr/bin/env bash
# secureai demo: CRDs and policy on the local control plane, the operator, the examples,
# then a tamper and its revert. `make down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${SECUREAI_CLUSTER_DIR:-$ROOT/.cluster}
BIN=$(hack/build.sh --print-bindir)
export KUBECONFIG=$STATE/kubeconfig
export PATH=$BIN:$PATH
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "CRDs"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/securetrainingjobs.secureai.dev \
  crd/secureinferenceservices.secureai.dev --timeout=60s

say "Namespaces, a real signing key and a signed model"
for ns in ml-team ml-serving secureai-system; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
DEMO=$STATE/demo
mkdir -p "$DEMO"
if [ ! -f "$DEMO/signer.pub" ]; then
  .venv/bin/secureai model keygen --private-key "$DEMO/signer.key" --public-key "$DEMO/signer.pub"
fi
for claim in chat-llm-weights embeddings-model; do
  cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $claim, namespace: ml-serving}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: encrypted-ssd
  resources: {requests: {storage: 10Gi}}
YAML
done
kubectl -n ml-serving create configmap model-signer --from-file=signer.pub="$DEMO/signer.pub" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n ml-team create secret generic wandb-credentials --from-literal=key=demo \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "model-signer ConfigMap holds $(head -1 "$DEMO/signer.pub")"

say "Operator (logs: $STATE/logs/operator.log)"
if [ -f "$STATE/operator.pid" ] && kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$STATE/operator.pid"))"
else
  mkdir -p "$STATE/logs"
  SECUREAI_NAMESPACE=secureai-system nohup .venv/bin/secureai run \
    --policy examples/policy.yaml --health-port 18081 --metrics-port 18080 \
    >"$STATE/logs/operator.log" 2>&1 &
  echo $! >"$STATE/operator.pid"
  for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:18081/readyz >/dev/null && break
    kill -0 "$(cat "$STATE/operator.pid")" || { tail -20 "$STATE/logs/operator.log"; exit 1; }
    sleep 0.2
  done
  curl -sf http://127.0.0.1:18081/readyz >/dev/null
  echo "ready (pid $(cat "$STATE/operator.pid"))"
fi

say "Examples"
kubectl apply -f examples/training-single-gpu.yaml -f examples/training-distributed.yaml \
  -f examples/inference-gpu-guarded.yaml -f examples/inference-cpu.yaml
kubectl -n ml-serving wait sis --all --for=condition=Ready --timeout=180s
kubectl -n ml-team wait stj --all --for=jsonpath='{.status.phase}'=Succeeded --timeout=240s
kubectl get stj,sis -A -o wide

say "Tamper: scale the guarded model server to 5 replicas, as a user would"
before=$(date +%s%N)
kubectl -n ml-serving scale deployment/chat-llm --replicas=5 >/dev/null
for _ in $(seq 1 100); do
  [ "$(kubectl -n ml-serving get deployment chat-llm -o jsonpath='{.spec.replicas}')" = 2 ] && break
  sleep 0.05
done
after=$(date +%s%N)
echo "replicas back to $(kubectl -n ml-serving get deployment chat-llm -o jsonpath='{.spec.replicas}') \
after $(( (after - before) / 1000000 )) ms (including two kubectl round trips)"
kubectl -n ml-serving get events --field-selector reason=DriftReverted \
  -o custom-columns=TIME:.lastTimestamp,REASON:.reason,MESSAGE:.message | tail -3

REAL_NODE=$(sed -n 's/^REAL_NODE=//p' "$STATE/cluster.env" | tail -1)
if [ "${REAL_NODE:-0}" = 1 ]; then
  hack/demo-realnode.sh
else
  say "No real node in this cluster: the guarded call and the packet-level tamper are skipped"
fi

cat <<TXT

What to look at:
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH
  kubectl get stj,sis -A -o wide                      # Phase, GPUs, Ready, Drift columns
  kubectl -n ml-serving describe sis chat-llm         # conditions, lineage, events
  kubectl -n ml-serving get deploy,svc,netpol,secret,cm,pdb -l secureai.dev/workload=chat-llm
  kubectl get ns ml-serving --show-labels             # Pod Security restricted enforced
  curl -s http://127.0.0.1:18080/metrics | grep ^secureai_
  secureai render -f examples/inference-gpu-guarded.yaml --policy examples/policy.yaml
  make down                                           # stop the operator and the cluster
TXT
