# shellcheck shell=bash
# The real node of the local cluster: containerd + runc + CNI bridge, kubelet, kube-proxy and
# kube-router (NetworkPolicy only). Sourced by hack/cluster.sh, which provides log, die, start,
# alive, wait_until, kc, STATE, PKI, LOGS, BINDIR and the cluster's CIDRs.
#
# Network safety (SPEC §7): pods live on the bridge ${NODE_BRIDGE} in network namespaces that
# containerd's CNI creates. Pods get routes to the pod and Service ranges only (no default
# route); the host forwards only packets that arrive on the bridge; no NAT or masquerade is
# configured; and before containerd starts, the mangle chain ${GUARD_CHAIN} drops every packet
# from or to the pod and Service ranges that would leave through any interface other than the
# bridge or loopback. `guard_ok` checks all of this and the node refuses to start without it.

NODE_NAME="${SECUREAI_REAL_NODE_NAME:-real-1}"
NODE_BRIDGE=sai0
NODE_POD_CIDR=10.244.200.0/24
NODE_IP=10.244.200.1
GUARD_CHAIN=SECUREAI-GUARD
NODE_TAINT_KEY=secureai.dev/real-node
NODE_DIR="${STATE}/node"
NODE_RUN=/run/secureai-node
NODE_OWNER="${NODE_RUN}/owner"
CONTAINERD_SOCK="${NODE_RUN}/containerd.sock"
NODE_COMPONENTS=(containerd kube-router kube-proxy kubelet)
CNI_BIN_DIR=/usr/lib/cni

ctr_() { "${BINDIR}/ctr" --address "${CONTAINERD_SOCK}" -n k8s.io "$@"; }

# why_no_real_node: print why this machine cannot run the real node (nothing when it can)
why_no_real_node() {
  [[ "${SECUREAI_REAL_NODE:-1}" == 0 ]] && { echo "SECUREAI_REAL_NODE=0"; return; }
  [[ "$(id -u)" == 0 ]] || { echo "not root"; return; }
  local b
  for b in kubelet kube-proxy containerd containerd-shim-runc-v2 ctr kube-router; do
    [[ -x "${BINDIR}/${b}" ]] || { echo "${BINDIR}/${b} missing (make toolchain)"; return; }
  done
  for b in runc iptables ipset conntrack ip; do
    command -v "${b}" >/dev/null || { echo "${b} missing (apt-get install runc iptables ipset conntrack iproute2)"; return; }
  done
  for b in bridge host-local loopback; do
    [[ -x "${CNI_BIN_DIR}/${b}" ]] || { echo "CNI plugin ${b} missing (apt-get install containernetworking-plugins)"; return; }
  done
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || { echo "no bridge netfilter in this kernel"; return; }
  grep -q overlay /proc/filesystems || { echo "no overlay filesystem in this kernel"; return; }
  [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] || { echo "no memory cgroup"; return; }
  [[ -f "${IMAGES_DIR:-}/pause.oci.tar" ]] || { echo "images not built (make images)"; return; }
  if [[ -f "${NODE_OWNER}" ]]; then
    local owner
    owner="$(cat "${NODE_OWNER}")"
    if [[ "${owner}" != "${STATE}" && -d "${owner}" ]] && pgrep -f "kubelet.*--root-dir=${owner}/node/kubelet" >/dev/null; then
      echo "the real node is already used by the cluster in ${owner}"
      return
    fi
  fi
}

# ---- network ---------------------------------------------------------------------------------
guard_rules() {
  local cidr
  echo "-A ${GUARD_CHAIN} -o ${NODE_BRIDGE} -j RETURN"
  echo "-A ${GUARD_CHAIN} -o lo -j RETURN"
  for cidr in "${POD_CIDR}" "${SERVICE_CIDR}"; do
    echo "-A ${GUARD_CHAIN} -s ${cidr} -j DROP"
    echo "-A ${GUARD_CHAIN} -d ${cidr} -j DROP"
  done
}

# guard_ok: the drop rules, the bridge-only forwarding and the pods' missing default route
guard_ok() {
  local want have
  want="$(guard_rules)"
  have="$(iptables -w -t mangle -S "${GUARD_CHAIN}" 2>/dev/null | grep -- "^-A " || true)"
  [[ "${have}" == "${want}" ]] || { echo "mangle ${GUARD_CHAIN} rules differ"; return 1; }
  iptables -w -t mangle -C POSTROUTING -j "${GUARD_CHAIN}" 2>/dev/null || { echo "POSTROUTING does not jump to ${GUARD_CHAIN}"; return 1; }
  [[ "$(iptables -w -t mangle -S POSTROUTING | grep -- '^-A' | head -1)" == "-A POSTROUTING -j ${GUARD_CHAIN}" ]] \
    || { echo "${GUARD_CHAIN} is not the first rule of mangle POSTROUTING"; return 1; }
  [[ "$(cat /proc/sys/net/ipv4/conf/all/forwarding)" == 0 ]] || { echo "forwarding is on for all interfaces"; return 1; }
  local dev
  for dev in /proc/sys/net/ipv4/conf/*/forwarding; do
    dev="${dev#/proc/sys/net/ipv4/conf/}"; dev="${dev%/forwarding}"
    [[ "${dev}" == "${NODE_BRIDGE}" || "${dev}" == all || "${dev}" == default || "${dev}" == lo ]] && continue
    [[ "${dev}" == veth* ]] && continue  # bridge ports: their packets are bridged, not routed
    [[ "$(cat "/proc/sys/net/ipv4/conf/${dev}/forwarding")" == 0 ]] || { echo "forwarding is on for ${dev}"; return 1; }
  done
  if iptables -w -t nat -S 2>/dev/null | grep -E -- '-j (MASQUERADE|SNAT)' | grep -v -- '-j KUBE-MARK' | grep -vq -- "-o ${NODE_BRIDGE}\|KUBE-"; then
    echo "a MASQUERADE or SNAT rule outside kube-proxy's chains exists"; return 1
  fi
  return 0
}

network_up() {
  ip link show "${NODE_BRIDGE}" >/dev/null 2>&1 || ip link add "${NODE_BRIDGE}" type bridge
  ip addr replace "${NODE_IP}/24" dev "${NODE_BRIDGE}"
  ip link set "${NODE_BRIDGE}" up
  # everything addressed to the pod and Service ranges stays on the bridge
  ip route replace "${POD_CIDR}" dev "${NODE_BRIDGE}" proto static
  ip route replace "${SERVICE_CIDR}" dev "${NODE_BRIDGE}" proto static
  iptables -w -t mangle -N "${GUARD_CHAIN}" 2>/dev/null || iptables -w -t mangle -F "${GUARD_CHAIN}"
  local rule
  while read -r rule; do
    # shellcheck disable=SC2086
    iptables -w -t mangle ${rule}
  done < <(guard_rules)
  while iptables -w -t mangle -D POSTROUTING -j "${GUARD_CHAIN}" 2>/dev/null; do :; done
  iptables -w -t mangle -I POSTROUTING 1 -j "${GUARD_CHAIN}"
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 0 >/proc/sys/net/ipv4/conf/all/forwarding
  echo 1 >"/proc/sys/net/ipv4/conf/${NODE_BRIDGE}/forwarding"
  local why
  why="$(guard_ok)" || die "network guard check failed: ${why}; refusing to start pods"
  log "network guard in place: ${GUARD_CHAIN} drops ${POD_CIDR} and ${SERVICE_CIDR} off ${NODE_BRIDGE}; forwarding only on ${NODE_BRIDGE}"
}

network_down() {
  while iptables -w -t mangle -D POSTROUTING -j "${GUARD_CHAIN}" 2>/dev/null; do :; done
  iptables -w -t mangle -F "${GUARD_CHAIN}" 2>/dev/null || true
  iptables -w -t mangle -X "${GUARD_CHAIN}" 2>/dev/null || true
  ip route del "${POD_CIDR}" dev "${NODE_BRIDGE}" 2>/dev/null || true
  ip route del "${SERVICE_CIDR}" dev "${NODE_BRIDGE}" 2>/dev/null || true
  ip link del "${NODE_BRIDGE}" 2>/dev/null || true
}

# ---- configuration ----------------------------------------------------------------------------
node_configs() {
  mkdir -p "${NODE_DIR}"/{cni,cni-ipam,kubelet,containerd} "${NODE_RUN}"
  cat >"${NODE_DIR}/cni/10-secureai.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "secureai",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${NODE_BRIDGE}",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${NODE_DIR}/cni-ipam",
        "ranges": [[{"subnet": "${NODE_POD_CIDR}", "gateway": "${NODE_IP}"}]],
        "routes": [{"dst": "${POD_CIDR}"}, {"dst": "${SERVICE_CIDR}"}]
      }
    }
  ]
}
EOF
  cat >"${NODE_DIR}/containerd.toml" <<EOF
version = 3
root = "${NODE_DIR}/containerd"
state = "${NODE_RUN}/state"

[grpc]
  address = "${CONTAINERD_SOCK}"

[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # root here has no CAP_SYS_RESOURCE: negative OOM scores are refused by the kernel
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["${CNI_BIN_DIR}"]
    conf_dir = "${NODE_DIR}/cni"
    max_conf_num = 1
EOF
  : >"${NODE_DIR}/resolv.conf"
  cat >"${NODE_DIR}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: ${PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
imageServiceEndpoint: unix://${CONTAINERD_SOCK}
clusterDomain: cluster.local
resolvConf: ${NODE_DIR}/resolv.conf
podCIDR: ${NODE_POD_CIDR}
maxPods: 40
serializeImagePulls: false
registerWithTaints:
- key: ${NODE_TAINT_KEY}
  value: "true"
  effect: NoSchedule
evictionHard:
  memory.available: "200Mi"
  nodefs.available: "2%"
  imagefs.available: "2%"
  nodefs.inodesFree: "2%"
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 60s
shutdownGracePeriod: 0s
EOF
  cat >"${NODE_DIR}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${STATE}/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: ${NODE_NAME}
bindAddress: ${NODE_IP}
clusterCIDR: ${POD_CIDR}
healthzBindAddress: 127.0.0.1:0
metricsBindAddress: 127.0.0.1:0
# NodePorts only on the bridge address, never on the uplink
nodePortAddresses: ["${NODE_IP}/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  masqueradeAll: false
  localhostNodePorts: false
EOF
}

node_pki() {
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  cert kubelet "system:node:${NODE_NAME}" system:nodes "${client}"
  cert kubelet-serving "system:node:${NODE_NAME}" system:nodes "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:${NODE_IP},DNS:${NODE_NAME}"
  cert kube-proxy system:kube-proxy "" "${client}"
  cert kube-router secureai-local-kube-router "" "${client}"
  kubeconfig kubelet kubelet
  kubeconfig kube-proxy kube-proxy
  kubeconfig kube-router kube-router
}

node_rbac() {
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: secureai:local-kube-proxy
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node-proxier}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:kube-proxy}
---
# the API server's kubelet client (logs, exec, port-forward)
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: secureai:apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
---
# kube-router as a NetworkPolicy controller: reads policies, pods, namespaces and nodes
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: secureai:local-kube-router
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [nodes]
  verbs: [patch, update]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: secureai:local-kube-router
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secureai:local-kube-router}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: secureai-local-kube-router}
EOF
}

import_images() {
  local archive
  for archive in "${IMAGES_DIR}"/*.oci.tar; do
    ctr_ images import --no-unpack=false --snapshotter overlayfs "${archive}" >/dev/null \
      || die "ctr images import ${archive} failed"
  done
  log "images imported: $(ctr_ images ls -q | grep -c '^secureai.local/') references"
}

node_ready() {
  [[ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

containerd_ready() { ctr_ version >/dev/null 2>&1; }

kube_router_ready() { iptables -w -S 2>/dev/null | grep -q 'KUBE-ROUTER-FORWARD'; }

real_node_up() {
  local why
  why="$(why_no_real_node)"
  if [[ -n "${why}" ]]; then
    log "no real node: ${why}; kwok nodes only"
    echo "REAL_NODE=0" >>"${STATE}/cluster.env"
    return 0
  fi
  local t0=${SECONDS}
  read -r KUBELET_HEALTHZ_PORT <<<"$(free_ports 1)"
  PAUSE_IMAGE="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"]["pause"]["repository"] + ":" + json.load(open(sys.argv[1]))["images"]["pause"]["tag"])' "${DIGESTS_FILE}")"
  mkdir -p "${NODE_RUN}"
  echo "${STATE}" >"${NODE_OWNER}"
  cleanup_node_leftovers
  network_up
  node_pki
  node_configs
  node_rbac
  start containerd env PATH="${BINDIR}:/usr/sbin:/usr/bin:/sbin:/bin" "${BINDIR}/containerd" --config "${NODE_DIR}/containerd.toml"
  printf '%s' "${BINDIR}/containerd" >"${PIDS}/containerd.cmd"
  wait_until "containerd" containerd containerd_ready
  import_images
  start kube-router "${BINDIR}/kube-router" --kubeconfig="${STATE}/kube-router.kubeconfig" \
    --hostname-override="${NODE_NAME}" --run-firewall=true --run-router=false --run-service-proxy=false \
    --run-loadbalancer=false --enable-ipv4=true --enable-ipv6=false --enable-cni=false \
    --metrics-port=0 --health-port=0 --iptables-sync-period=5m --ipset-use-counters=false
  start kube-proxy "${BINDIR}/kube-proxy" --config="${NODE_DIR}/kube-proxy.yaml"
  start kubelet "${BINDIR}/kubelet" --config="${NODE_DIR}/kubelet.yaml" \
    --kubeconfig="${STATE}/kubelet.kubeconfig" --root-dir="${NODE_DIR}/kubelet" \
    --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}" \
    --node-labels="type=real,secureai.dev/pool=real,secureai.dev/node=real"
  wait_until "node ${NODE_NAME} Ready" kubelet node_ready
  kc patch node "${NODE_NAME}" --type=merge -p "{\"spec\":{\"podCIDR\":\"${NODE_POD_CIDR}\",\"podCIDRs\":[\"${NODE_POD_CIDR}\"]}}" >/dev/null 2>&1 || true
  wait_until "kube-router's firewall chains" kube-router kube_router_ready
  local why_guard
  why_guard="$(guard_ok)" || die "network guard check failed after start: ${why_guard}"
  echo "REAL_NODE=1" >>"${STATE}/cluster.env"
  echo "REAL_NODE_NAME=${NODE_NAME}" >>"${STATE}/cluster.env"
  log "real node ${NODE_NAME} Ready in $((SECONDS - t0))s (pods ${NODE_POD_CIDR} on ${NODE_BRIDGE}, taint ${NODE_TAINT_KEY})"
}

# stop every container and unmount what the node mounted; safe to run when nothing is left
cleanup_node_leftovers() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address ${CONTAINERD_SOCK}" || true); do
    kill -KILL "${pid}" 2>/dev/null || true
  done
  local m
  for m in $(awk -v d="${NODE_DIR}/" -v r="${NODE_RUN}/" '$2 ~ "^"d || $2 ~ "^"r {print $2}' /proc/self/mounts | sort -r); do
    umount -l "${m}" 2>/dev/null || true
  done
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns del "${ns}" 2>/dev/null || true; done
  for m in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    [[ "$(cat "/sys/class/net/${m}/master/uevent" 2>/dev/null | sed -n 's/^INTERFACE=//p')" == "${NODE_BRIDGE}" ]] && ip link del "${m}" 2>/dev/null
  done
  return 0
}

real_node_down() {
  [[ -f "${NODE_OWNER}" && "$(cat "${NODE_OWNER}")" == "${STATE}" ]] || return 0
  cleanup_node_leftovers
  if [[ -x "${BINDIR}/kube-proxy" ]]; then "${BINDIR}/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  if [[ -x "${BINDIR}/kube-router" ]]; then "${BINDIR}/kube-router" --cleanup-config >/dev/null 2>&1 || true; fi
  network_down
  rm -f "${NODE_OWNER}"
  return 0
}
