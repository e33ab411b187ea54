#!/usr/bin/env bash
# The demo's real-node part (called by hack/demo.sh when the cluster has a real node): a
# guarded model server with a signed model runs for real; a client pod calls it over TLS and
# gets a redacted answer; a NetworkPolicy tamper is reverted and the probe is blocked again.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${SECUREAI_CLUSTER_DIR:-$PWD/.cluster}
DEMO=$STATE/demo
NS=ml-demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
image() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][sys.argv[2]]["image"])' \
  charts/secureai-operator/images.json "$1"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

say "A namespace whose pods run on the real node (Pod Security restricted)"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
kubectl annotate namespace "$NS" --overwrite \
  scheduler.alpha.kubernetes.io/node-selector=secureai.dev/node=real \
  'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key":"secureai.dev/real-node","operator":"Exists","effect":"NoSchedule"}]' >/dev/null

say "A model signed with secureai model sign, on a real volume"
cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: chat-model, namespace: $NS}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: encrypted-ssd
  resources: {requests: {storage: 1Gi}}
YAML
kubectl -n "$NS" wait pvc/chat-model --for=jsonpath='{.status.phase}'=Bound --timeout=60s >/dev/null
volume=$(kubectl get pv "$(kubectl -n "$NS" get pvc chat-model -o jsonpath='{.spec.volumeName}')" \
  -o jsonpath='{.spec.hostPath.path}')
model=$DEMO/model
if [ ! -f "$model/model.sig.json" ]; then
  mkdir -p "$model"
  head -c 4194304 /dev/urandom >"$model/weights.bin"
  echo '{"architecture": "demo", "layers": 2}' >"$model/config.json"
  .venv/bin/secureai model sign --model "$model" --private-key "$DEMO/signer.key"
fi
cp -r "$model/." "$volume/"
chown -R 65532:65532 "$volume"
kubectl -n "$NS" create configmap model-signer --from-file=signer.pub="$DEMO/signer.pub" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
ls -l "$volume"

say "A guarded SecureInferenceService"
cat <<YAML | kubectl apply -f -
apiVersion: secureai.dev/v1alpha1
kind: SecureInferenceService
metadata: {name: chat, namespace: $NS}
spec:
  image: $(image modelserver)
  resources: {cpu: 200m, memory: 128Mi}
  port: 8080
  model: {claimName: chat-model, signerKeyConfigMap: model-signer}
  guard: {enabled: true}
  probes:
    readiness: {path: /ready}
  network:
    ingress:
      - podSelector: {app: search}
YAML
kubectl -n "$NS" wait sis/chat --for=condition=Ready --timeout=180s >/dev/null
kubectl -n "$NS" get sis chat -o jsonpath='{"model digest "}{.status.lineage.modelDigest}{"\nsigned by    "}{.status.lineage.modelSigner}{"\n"}'

say "Client pods: 'search' may call the service, 'outsider' may not"
kubectl -n secureai-system get configmap secureai-ca-bundle -o jsonpath='{.data.ca\.crt}' >"$DEMO/ca.crt"
kubectl -n "$NS" create configmap client --from-file=ca.crt="$DEMO/ca.crt" \
  --from-file=client.py=tests/node/tls_client.py --dry-run=client -o yaml | kubectl apply -f - >/dev/null
for who in search outsider; do
  app=$([ "$who" = search ] && echo search || echo other)
  cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $who, namespace: $NS, labels: {app: $app}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: client
      image: $(image secureai-operator)
      command: [/usr/bin/python3.11, -c, "import time; time.sleep(86400)"]
      resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 50m, memory: 64Mi}}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: client, mountPath: /etc/client, readOnly: true}]
  volumes: [{name: client, configMap: {name: client}}]
YAML
done
kubectl -n "$NS" wait pod/search pod/outsider --for=condition=Ready --timeout=120s >/dev/null
echo "pods on the real node:"
kubectl get pods -A -o wide --field-selector spec.nodeName=real-1 | cut -c1-120

call() { # FROM HOST PORT BODY
  kubectl -n "$NS" exec "$1" -- /usr/bin/python3.11 /etc/client/client.py \
    "$2" "$3" "chat.$NS.svc" /etc/client/ca.crt "$4"
}
say "search -> https://chat.$NS.svc (TLS verified with the operator's CA), an answer full of PII"
service_ip=$(kubectl -n "$NS" get svc chat -o jsonpath='{.spec.clusterIP}')
echo "request: contact jane.doe@example.org, card 4111 1111 1111 1111, ssn 078-05-1120"
call search "$service_ip" 443 "contact jane.doe@example.org, card 4111 1111 1111 1111, ssn 078-05-1120"

say "outsider -> the model server pod: blocked by NetworkPolicy (kube-router, real packets)"
pod_ip=$(kubectl -n "$NS" get pod -l secureai.dev/workload=chat -o jsonpath='{.items[0].status.podIP}')
call outsider "$pod_ip" 8443 x

say "Tamper: widen chat-allow to every pod of the namespace, as a user with edit rights would"
t0=$(now_ms)
kubectl -n "$NS" patch networkpolicy chat-allow --type=json \
  -p '[{"op":"replace","path":"/spec/ingress/0/from","value":[{"podSelector":{}}]}]' >/dev/null
deadline=$(( $(now_ms) + 30000 ))
until [ "$(kubectl -n "$NS" get networkpolicy chat-allow -o jsonpath='{.spec.ingress[0].from[0].podSelector.matchLabels.app}')" = search ]; do
  [ "$(now_ms)" -lt "$deadline" ] || { echo "chat-allow not reverted within 30 s" >&2; exit 1; }
  sleep 0.05
done
t1=$(now_ms)
echo "the operator reverted chat-allow after $((t1 - t0)) ms (including kubectl round trips)"
deadline=$(( $(now_ms) + 120000 ))
until call outsider "$pod_ip" 8443 x | grep -q '"connected": false'; do
  [ "$(now_ms)" -lt "$deadline" ] || { echo "outsider still connects 120 s after the tamper" >&2; exit 1; }
  sleep 0.5
done
t2=$(now_ms)
echo "outsider blocked again $((t2 - t0)) ms after the tamper:"
call outsider "$pod_ip" 8443 x
kubectl -n "$NS" get events --field-selector reason=DriftReverted \
  -o custom-columns=TIME:.lastTimestamp,REASON:.reason,MESSAGE:.message | tail -2
