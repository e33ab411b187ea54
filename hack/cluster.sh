#!/usr/bin/env bash
# Local Kubernetes control plane for secureai: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, a kwok controller (simulated nodes and pods), a tiny PV provisioner and, where
# the machine can run it, one real node (hack/realnode.sh: containerd, kubelet, kube-proxy,
# kube-router for NetworkPolicy) whose pods run the images of `make images`.
#
#   hack/cluster.sh up      start it (no-op when already up), write .cluster/kubeconfig
#   hack/cluster.sh down    stop every process it started and remove .cluster/
#   hack/cluster.sh status  show processes, readiness and nodes
#   hack/cluster.sh env     print shell exports: eval "$(hack/cluster.sh env)"
#
# The control plane listens on 127.0.0.1 only, on free ports picked at `up`. Binaries come from
# hack/build.sh (make toolchain). The real node needs root; SECUREAI_REAL_NODE=0 skips it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SECUREAI_CLUSTER_DIR:-${REPO}/.cluster}"
PKI="${STATE}/pki"
LOGS="${STATE}/logs"
PIDS="${STATE}/pids"
KUBECONFIG_ADMIN="${STATE}/kubeconfig"
BINDIR="$("${REPO}/hack/build.sh" --print-bindir)"
VENV_PY="${REPO}/.venv/bin/python"
UP_TIMEOUT="${SECUREAI_UP_TIMEOUT:-120}"          # seconds, per component
GPU_NODES_PER_POOL="${SECUREAI_GPU_NODES_PER_POOL:-2}"
CPU_NODES="${SECUREAI_CPU_NODES:-2}"
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16
KWOK_POD_CIDR=10.244.0.0/17   # fake pod IPs; the real node has 10.244.200.0/24
IMAGES_DIR="${SECUREAI_CACHE:-${HOME}/.cache/secureai}/images/oci"
DIGESTS_FILE="${REPO}/charts/secureai-operator/images.json"
ISSUER=https://kubernetes.default.svc.cluster.local
# start order; `down` stops in reverse
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok provisioner)
# shellcheck source=hack/realnode.sh
source "${REPO}/hack/realnode.sh"

# One `up`/`down` at a time per state dir (several shells or test sessions may share a clone).
# The lock lives outside the state dir, which `down` removes. A caller that already holds it
# (tests/clusterkit.py) sets SECUREAI_CLUSTER_LOCK_HELD=1.
LOCK="${TMPDIR:-/tmp}/secureai-cluster-$(printf '%s' "${STATE}" | sha1sum | cut -c1-12).lock"
lock() {
  [[ "${SECUREAI_CLUSTER_LOCK_HELD:-0}" == 1 ]] && return 0
  exec 9>>"${LOCK}"
  flock -w 600 9 || die "could not get ${LOCK} within 600s"
}

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- process bookkeeping -------------------------------------------------------------------
pid_of() { if [[ -f "${PIDS}/$1.pid" ]]; then cat "${PIDS}/$1.pid"; fi; }

# alive NAME: the recorded pid exists and still runs the binary we started (guards against
# pid reuse after a reboot or a crash)
alive() {
  local pid exe
  pid="$(pid_of "$1")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  exe="$(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null || true)"
  [[ "${exe}" == *"$(cat "${PIDS}/$1.cmd" 2>/dev/null || echo '?')"* ]]
}

# start NAME CMD...: run in its own session, output to logs/NAME.log, record the pid
start() {
  local name="$1"; shift
  log "starting ${name}"
  setsid "$@" >>"${LOGS}/${name}.log" 2>&1 </dev/null 9>&- &
  echo $! >"${PIDS}/${name}.pid"
  printf '%s' "$1" >"${PIDS}/${name}.cmd"
}

# stop_all: SIGTERM every recorded component that still runs, wait for all of them (deadline),
# then SIGKILL stragglers. Only pids recorded by `up` are signalled, never a process by name.
stop_all() {
  local i name pid deadline
  local -a names=() pids=() all=("${COMPONENTS[@]}" "${NODE_COMPONENTS[@]}")
  for ((i = ${#all[@]} - 1; i >= 0; i--)); do
    name="${all[i]}"
    if alive "${name}"; then
      pid="$(pid_of "${name}")"
      kill -TERM "${pid}" 2>/dev/null || true
      names+=("${name}"); pids+=("${pid}")
    fi
  done
  deadline=$((SECONDS + 20))
  for i in "${!pids[@]}"; do
    while kill -0 "${pids[i]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "${pids[i]}" 2>/dev/null; then
      log "${names[i]} (pid ${pids[i]}) ignored SIGTERM; killing"
      kill -KILL "${pids[i]}" 2>/dev/null || true
    fi
    log "stopped ${names[i]} (pid ${pids[i]})"
  done
  for name in "${all[@]}"; do rm -f "${PIDS}/${name}.pid" "${PIDS}/${name}.cmd"; done
  real_node_down
}

# wait_until DESCRIPTION COMPONENT CMD...: poll CMD until it succeeds; fail at the deadline or
# as soon as COMPONENT has died (and show its log)
wait_until() {
  local what="$1" comp="$2"; shift 2
  local deadline=$((SECONDS + UP_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "${comp}" ]] && ! alive "${comp}"; then
      tail -n 30 "${LOGS}/${comp}.log" >&2 || true
      die "${comp} exited while waiting for ${what} (log: ${LOGS}/${comp}.log)"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n "${comp}" ]] && { tail -n 30 "${LOGS}/${comp}.log" >&2 || true; }
      die "timed out after ${UP_TIMEOUT}s waiting for ${what}"
    fi
    sleep 0.2
  done
}

kc() { "${BINDIR}/kubectl" --kubeconfig "${KUBECONFIG_ADMIN}" "$@"; }

apiserver_ready() {
  [[ -f "${KUBECONFIG_ADMIN}" ]] && kc get --raw=/readyz --request-timeout=5s >/dev/null 2>&1
}

# /healthz of kube-controller-manager and kube-scheduler (self-signed serving certs, loopback)
https_ok_insecure() { curl -fsSk --max-time 5 "$1" >/dev/null 2>&1; }

etcd_healthy() {
  ETCDCTL_API=3 "${BINDIR}/etcdctl" --endpoints="${ETCD_ENDPOINT}" --cacert="${PKI}/ca.crt" \
    --cert="${PKI}/etcd-client.crt" --key="${PKI}/etcd-client.key" --command-timeout=3s \
    endpoint health >/dev/null 2>&1
}

is_up() {
  [[ -f "${STATE}/cluster.env" ]] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do alive "${c}" || return 1; done
  if [[ "${REAL_NODE:-0}" == 1 ]]; then
    for c in "${NODE_COMPONENTS[@]}"; do alive "${c}" || return 1; done
  fi
  apiserver_ready
}

# free_ports N: N distinct free TCP ports on 127.0.0.1 (all bound at once, then released)
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# ---- PKI ------------------------------------------------------------------------------------
# ca NAME CN: a self-signed CA
ca() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${PKI}/$1.key" 2>/dev/null
  openssl req -x509 -new -key "${PKI}/$1.key" -subj "/CN=$2" -days 365 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "${PKI}/$1.crt" 2>/dev/null
}

# cert NAME CN ORG(may be empty) EXTFILE-CONTENT [CA-NAME]
cert() {
  local name="$1" cn="$2" org="$3" ext="$4" signer="${5:-ca}" subj="/CN=$2"
  [[ -n "${org}" ]] && subj="/O=${org}/CN=${cn}"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${PKI}/${name}.key" 2>/dev/null
  openssl req -new -key "${PKI}/${name}.key" -subj "${subj}" -out "${PKI}/${name}.csr" 2>/dev/null
  printf '%s\n' "${ext}" >"${PKI}/${name}.ext"
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/${signer}.crt" -CAkey "${PKI}/${signer}.key" \
    -CAcreateserial -days 365 -sha256 -extfile "${PKI}/${name}.ext" -out "${PKI}/${name}.crt" 2>/dev/null
  rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}

gen_pki() {
  log "generating certificates (openssl)"
  mkdir -p "${PKI}"
  umask 077
  ca ca secureai-local-ca
  # front proxy (requestheader) CA: lets components delegate authentication to the apiserver
  # and makes aggregated APIs possible
  ca front-proxy-ca secureai-local-front-proxy-ca
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  local server="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
  cert apiserver kube-apiserver "" "${server}
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert etcd-server etcd "" "${server}
subjectAltName=IP:127.0.0.1,DNS:localhost"
  cert apiserver-etcd-client kube-apiserver-etcd-client "" "${client}"
  cert etcd-client secureai-etcd-client "" "${client}"
  cert admin secureai-admin system:masters "${client}"
  cert kube-controller-manager system:kube-controller-manager "" "${client}"
  cert kube-scheduler system:kube-scheduler "" "${client}"
  cert front-proxy-client front-proxy-client "" "${client}" front-proxy-ca
  # kwok impersonates and patches node/pod status everywhere: it runs as a cluster admin
  cert kwok kwok-controller system:masters "${client}"
  cert provisioner secureai-local-provisioner "" "${client}"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client "" "${client}"
  # service-account token signing key pair
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "${PKI}/sa.key" 2>/dev/null
  openssl pkey -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
  umask 022
}

# kubeconfig NAME CERT-BASENAME
kubeconfig() {
  local file="${STATE}/$1.kubeconfig"
  [[ "$1" == admin ]] && file="${KUBECONFIG_ADMIN}"
  cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: secureai
  cluster:
    server: https://127.0.0.1:${API_PORT}
    certificate-authority: ${PKI}/ca.crt
users:
- name: $1
  user:
    client-certificate: ${PKI}/$2.crt
    client-key: ${PKI}/$2.key
contexts:
- name: secureai
  context:
    cluster: secureai
    user: $1
current-context: secureai
EOF
  chmod 600 "${file}"
}

gen_configs() {
  local key
  key="$(head -c 32 /dev/urandom | base64)"
  cat >"${STATE}/encryption-config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - secretbox:
      keys:
      - name: key1
        secret: ${key}
  - identity: {}
EOF
  chmod 600 "${STATE}/encryption-config.yaml"
  # The chart's audit policy (charts/secureai-operator/files/audit-policy.yaml: every write,
  # secureai.dev kinds at RequestResponse, the rest at Metadata), after one local rule: node
  # leases renewed by kwok every few seconds are left out as noise.
  {
    cat <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: [kwok-controller]
  verbs: [update, patch]
  resources:
  - group: coordination.k8s.io
    resources: [leases]
EOF
    sed -n '/^rules:/,$p' "${REPO}/charts/secureai-operator/files/audit-policy.yaml" | tail -n +2
  } >"${STATE}/audit-policy.yaml"
  cat >"${STATE}/scheduler-config.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: ${STATE}/kube-scheduler.kubeconfig
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
EOF
  cat >"${STATE}/kwok-config.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  cidr: ${KWOK_POD_CIDR}
  nodeIP: 127.0.0.1
  nodeLeaseDurationSeconds: 40
  # kwok applies its defaults only without a config file: spell them out
  nodeLeaseParallelism: 2
  nodePlayStageParallelism: 2
  podPlayStageParallelism: 4
  podsOnNodeSyncParallelism: 1
  enablePodsOnNodeSyncListPager: true
  enablePodsOnNodeSyncStreamWatch: false
  enableDebuggingHandlers: false
  enableProfilingHandler: false
  enableContentionProfiling: false
  manageAllNodes: false
  manageNodesWithAnnotationSelector: kwok.x-k8s.io/node=fake
EOF
}

# ---- nodes and storage ----------------------------------------------------------------------
node_yaml() { # NAME POOL(empty for cpu) GPUS CPU MEMORY PODS
  local name="$1" pool="$2" gpus="$3" cpu="$4" mem="$5" pods="$6" extra_labels="" spec=" {}" res
  res="cpu: \"${cpu}\"
      memory: ${mem}
      pods: \"${pods}\"
      ephemeral-storage: 10Ti"
  if [[ -n "${pool}" ]]; then
    extra_labels="
    nvidia.com/gpu.present: \"true\"
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: \"${gpus}\"
    secureai.dev/pool: ${pool}"
    spec="
  taints:
  - key: nvidia.com/gpu
    value: present
    effect: NoSchedule"
    res+="
      nvidia.com/gpu: \"${gpus}\""
  else
    extra_labels="
    secureai.dev/pool: cpu"
  fi
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: ${name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: ${name}
    node.kubernetes.io/instance-type: ${pool:-cpu}${extra_labels}
spec:${spec}
status:
  addresses:
  - type: InternalIP
    address: 127.0.0.1
  - type: Hostname
    address: ${name}
  allocatable:
      ${res}
  capacity:
      ${res}
EOF
}

create_nodes() {
  local i pool out="${STATE}/nodes.yaml"
  : >"${out}"
  for pool in training inference; do
    for ((i = 1; i <= GPU_NODES_PER_POOL; i++)); do
      node_yaml "gpu-${pool}-${i}" "${pool}" 8 96 1Ti 500 >>"${out}"
    done
  done
  for ((i = 1; i <= CPU_NODES; i++)); do
    node_yaml "cpu-${i}" "" 0 256 2Ti 2000 >>"${out}"
  done
  kc apply -f "${out}" >/dev/null
}

create_storage() {
  kc apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: secureai:local-provisioner
rules:
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: secureai:local-provisioner
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: secureai:local-provisioner
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: secureai-local-provisioner
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: encrypted-ssd
provisioner: secureai.dev/local
parameters:
  encrypted: "true"
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
provisioner: secureai.dev/local
parameters:
  encrypted: "false"
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
EOF
}

nodes_ready() {
  local want=$((2 * GPU_NODES_PER_POOL + CPU_NODES)) n
  n="$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)"
  [[ "${n}" -eq "${want}" ]] || return 1
  # the node lifecycle controller removes the not-ready taint once it has seen them Ready
  ! kc get nodes -l type=kwok -o jsonpath='{.items[*].spec.taints[*].key}' | grep -q 'node.kubernetes.io/not-ready'
}

default_sa_exists() { kc -n default get serviceaccount default >/dev/null 2>&1; }

# ---- commands -------------------------------------------------------------------------------
preflight() {
  local b
  for b in etcd etcdctl kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
    [[ -x "${BINDIR}/${b}" ]] || die "${BINDIR}/${b} missing: run 'make toolchain' (hack/build.sh) first"
  done
  [[ -x "${VENV_PY}" ]] || die "${VENV_PY} missing: run 'make venv' first (the PV provisioner needs it)"
  "${VENV_PY}" -c 'import kubernetes' 2>/dev/null || die "the kubernetes client is not installed in .venv: run 'make venv'"
  command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
  command -v curl >/dev/null || die "curl is required (apt-get install curl)"
}

load_env() {
  [[ -f "${STATE}/cluster.env" ]] || return 1
  # shellcheck source=/dev/null
  source "${STATE}/cluster.env"
}

cmd_up() {
  preflight
  load_env || true
  if is_up; then
    log "already up (${KUBECONFIG_ADMIN})"
    usage_hint
    return 0
  fi
  if [[ -d "${STATE}" ]]; then
    log "removing stale state in ${STATE}"
    stop_all_from_state
    rm -rf "${STATE}"
  fi
  local t0=${SECONDS}
  mkdir -p "${STATE}" "${LOGS}" "${PIDS}"
  UP_DONE=0
  trap 'on_up_exit' EXIT

  read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT <<<"$(free_ports 6)"
  ETCD_ENDPOINT="https://127.0.0.1:${ETCD_PORT}"
  cat >"${STATE}/cluster.env" <<EOF
# written by hack/cluster.sh up
ETCD_PORT=${ETCD_PORT}
ETCD_PEER_PORT=${ETCD_PEER_PORT}
ETCD_ENDPOINT=${ETCD_ENDPOINT}
API_PORT=${API_PORT}
API_SERVER=https://127.0.0.1:${API_PORT}
KCM_PORT=${KCM_PORT}
SCHED_PORT=${SCHED_PORT}
KWOK_PORT=${KWOK_PORT}
BINDIR=${BINDIR}
EOF
  gen_pki
  gen_configs
  kubeconfig admin admin
  kubeconfig kube-controller-manager kube-controller-manager
  kubeconfig kube-scheduler kube-scheduler
  kubeconfig kwok kwok
  kubeconfig provisioner provisioner

  start etcd "${BINDIR}/etcd" \
    --name=secureai --data-dir="${STATE}/etcd" \
    --listen-client-urls="${ETCD_ENDPOINT}" --advertise-client-urls="${ETCD_ENDPOINT}" \
    --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster="secureai=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --cert-file="${PKI}/etcd-server.crt" --key-file="${PKI}/etcd-server.key" \
    --client-cert-auth --trusted-ca-file="${PKI}/ca.crt" \
    --unsafe-no-fsync --log-level=warn
  wait_until "etcd health" etcd etcd_healthy

  start kube-apiserver "${BINDIR}/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${API_PORT}" \
    --etcd-servers="${ETCD_ENDPOINT}" --etcd-cafile="${PKI}/ca.crt" \
    --etcd-certfile="${PKI}/apiserver-etcd-client.crt" --etcd-keyfile="${PKI}/apiserver-etcd-client.key" \
    --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
    --client-ca-file="${PKI}/ca.crt" \
    --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="${PKI}/front-proxy-client.crt" \
    --proxy-client-key-file="${PKI}/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction \
    --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
    --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="${PKI}/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --allow-privileged=true \
    --service-account-issuer="${ISSUER}" --api-audiences="${ISSUER}" \
    --service-account-key-file="${PKI}/sa.pub" --service-account-signing-key-file="${PKI}/sa.key" \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --endpoint-reconciler-type=none \
    --encryption-provider-config="${STATE}/encryption-config.yaml" \
    --audit-policy-file="${STATE}/audit-policy.yaml" --audit-log-path="${STATE}/audit.log" \
    --audit-log-format=json --audit-log-mode=blocking \
    --profiling=false
  wait_until "kube-apiserver /readyz" kube-apiserver apiserver_ready

  start kube-controller-manager "${BINDIR}/kube-controller-manager" \
    --kubeconfig="${STATE}/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="${STATE}/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="${STATE}/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="${KCM_PORT}" \
    --leader-elect=false --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="${PKI}/sa.key" --root-ca-file="${PKI}/ca.crt" \
    --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --kube-api-qps=200 --kube-api-burst=400 \
    --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10 \
    --concurrent-job-syncs=10 --concurrent-gc-syncs=20 \
    --min-resync-period=1m --node-monitor-period=2s \
    --profiling=false
  start kube-scheduler "${BINDIR}/kube-scheduler" \
    --config="${STATE}/scheduler-config.yaml" \
    --authentication-kubeconfig="${STATE}/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="${STATE}/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="${SCHED_PORT}" --profiling=false
  wait_until "kube-controller-manager /healthz" kube-controller-manager https_ok_insecure "https://127.0.0.1:${KCM_PORT}/healthz"
  wait_until "kube-scheduler /healthz" kube-scheduler https_ok_insecure "https://127.0.0.1:${SCHED_PORT}/healthz"

  log "creating nodes and StorageClasses"
  create_nodes
  create_storage
  start kwok "${BINDIR}/kwok" \
    --kubeconfig="${STATE}/kwok.kubeconfig" \
    --config="${STATE}/kwok-config.yaml" \
    --config="${REPO}/hack/kwok/node-stages.yaml" \
    --config="${REPO}/hack/kwok/pod-stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:${KWOK_PORT}"
  start provisioner "${VENV_PY}" "${REPO}/hack/provisioner.py" \
    --kubeconfig "${STATE}/provisioner.kubeconfig" --provisioner secureai.dev/local --volume-root "${STATE}/volumes"
  wait_until "nodes Ready" kwok nodes_ready
  wait_until "ServiceAccount default/default" kube-controller-manager default_sa_exists
  real_node_up
  UP_DONE=1
  log "cluster ready in $((SECONDS - t0))s"
  usage_hint
}

on_up_exit() {
  [[ "${UP_DONE:-0}" == 1 ]] && return 0
  log "up failed; stopping what was started (state and logs kept in ${STATE} for inspection)"
  stop_all
}

# stop components recorded in a stale state dir (pids are checked against their command line)
stop_all_from_state() {
  [[ -d "${PIDS}" ]] && stop_all
  return 0
}

usage_hint() {
  cat <<EOF
Local control plane is up.
  export KUBECONFIG=${KUBECONFIG_ADMIN}
  export PATH=${BINDIR}:\$PATH        # kubectl, helm, etcdctl of the pinned versions
  eval "\$(hack/cluster.sh env)"      # does both
  kubectl get nodes
API server https://127.0.0.1:${API_PORT}   etcd ${ETCD_ENDPOINT}
Logs: ${LOGS}/   audit log: ${STATE}/audit.log   stop: make down
EOF
}

cmd_down() {
  if [[ ! -d "${STATE}" ]]; then
    log "nothing to stop (${STATE} does not exist)"
    return 0
  fi
  load_env || true
  stop_all
  rm -rf "${STATE}"
  log "down; removed ${STATE}"
}

cmd_status() {
  if ! load_env; then
    echo "down (no ${STATE}/cluster.env)"
    return 1
  fi
  local c rc=0
  for c in "${COMPONENTS[@]}"; do
    if alive "${c}"; then printf '  %-24s running (pid %s)\n' "${c}" "$(pid_of "${c}")"
    else printf '  %-24s NOT RUNNING (log: %s)\n' "${c}" "${LOGS}/${c}.log"; rc=1; fi
  done
  if apiserver_ready; then
    echo "  kube-apiserver /readyz   ok  https://127.0.0.1:${API_PORT}"
    kc get nodes -L type,secureai.dev/pool,nvidia.com/gpu.present
    if [[ "${REAL_NODE:-0}" == 1 ]]; then
      for c in "${NODE_COMPONENTS[@]}"; do
        if alive "${c}"; then printf '  %-24s running (pid %s)\n' "${c}" "$(pid_of "${c}")"
        else printf '  %-24s NOT RUNNING (log: %s)\n' "${c}" "${LOGS}/${c}.log"; rc=1; fi
      done
      local why
      if why="$(guard_ok)"; then echo "  network guard             ok (${GUARD_CHAIN}; forwarding only on ${NODE_BRIDGE})"
      else echo "  network guard             FAILING: ${why}"; rc=1; fi
      echo "  real node: ${REAL_NODE_NAME} (type=real); every other node is simulated by kwok"
    else
      echo "  real node: none (kwok nodes only)"
    fi
  else
    echo "  kube-apiserver /readyz   FAILING"; rc=1
  fi
  return "${rc}"
}

cmd_env() {
  load_env || die "cluster is not up: run hack/cluster.sh up"
  cat <<EOF
export KUBECONFIG=${KUBECONFIG_ADMIN}
export PATH=${BINDIR}:\$PATH
export SECUREAI_ETCD_ENDPOINT=${ETCD_ENDPOINT}
export SECUREAI_ETCD_CACERT=${PKI}/ca.crt
export SECUREAI_ETCD_CERT=${PKI}/etcd-client.crt
export SECUREAI_ETCD_KEY=${PKI}/etcd-client.key
export SECUREAI_AUDIT_LOG=${STATE}/audit.log
EOF
}

# After `make images` on a running cluster: import the rebuilt images into the real node.
cmd_images() {
  load_env || die "cluster is not up: run hack/cluster.sh up"
  [[ "${REAL_NODE:-0}" == 1 ]] || { echo "no real node: nothing to import"; return 0; }
  import_images
}

case "${1:-}" in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  images) lock; cmd_images ;;
  *) echo "usage: $0 up|down|status|env|images" >&2; exit 2 ;;
esac
