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
# bridge or loopback, and the chain ${GUARD_IN_CHAIN} drops every such packet that arrives on
# another interface. The bridge plugin runs with isGateway false: it would turn on forwarding
# for every interface (the bridge address is set here instead). `guard_ok` checks all of this
# and the node refuses to start without it.

NODE_NAME="${SECUREAI_REAL_NODE_NAME:-real-1}"
NODE_BRIDGE=sai0
NODE_POD_CIDR=10.244.200.0/24
NODE_IP=10.244.200.1
GUARD_CHAIN=SECUREAI-GUARD          # mangle POSTROUTING: what may leave, by output interface
GUARD_IN_CHAIN=SECUREAI-GUARD-IN    # mangle PREROUTING: what may arrive, by input interface
NODE_TAINT_KEY=secureai.dev/real-node
NODE_DIR="${STATE}/node"
NODE_RUN=/run/secureai-node
NODE_OWNER="${NODE_RUN}/owner"
CONTAINERD_SOCK="${NODE_RUN}/containerd.sock"
NODE_COMPONENTS=(apiserver-bridge containerd kube-router kube-proxy kubelet)
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
  for b in runc iptables ipset conntrack ip socat; do
    command -v "${b}" >/dev/null || { echo "${b} missing (apt-get install runc iptables ipset conntrack iproute2 socat)"; return; }
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
# guard_rules CHAIN -o|-i: bridge and loopback pass; the pod and Service ranges, either way, do not
guard_rules() {
  local chain="$1" dir="$2" cidr
  echo "-A ${chain} ${dir} ${NODE_BRIDGE} -j RETURN"
  echo "-A ${chain} ${dir} lo -j RETURN"
  for cidr in "${POD_CIDR}" "${SERVICE_CIDR}"; do
    echo "-A ${chain} -s ${cidr} -j DROP"
    echo "-A ${chain} -d ${cidr} -j DROP"
  done
}

# install_guard CHAIN HOOK -o|-i: the chain's rules, and a jump to it as the hook's first rule
install_guard() {
  local chain="$1" hook="$2" dir="$3" rule
  iptables -w -t mangle -N "${chain}" 2>/dev/null || iptables -w -t mangle -F "${chain}"
  while read -r rule; do
    # shellcheck disable=SC2086
    iptables -w -t mangle ${rule}
  done < <(guard_rules "${chain}" "${dir}")
  while iptables -w -t mangle -D "${hook}" -j "${chain}" 2>/dev/null; do :; done
  iptables -w -t mangle -I "${hook}" 1 -j "${chain}"
}

# chain_ok CHAIN HOOK -o|-i
chain_ok() {
  local chain="$1" hook="$2" dir="$3" have
  have="$(iptables -w -t mangle -S "${chain}" 2>/dev/null | grep -- "^-A " || true)"
  [[ "${have}" == "$(guard_rules "${chain}" "${dir}")" ]] || { echo "mangle ${chain} rules differ"; return 1; }
  [[ "$(iptables -w -t mangle -S "${hook}" | grep -- '^-A' | head -1)" == "-A ${hook} -j ${chain}" ]] \
    || { echo "${chain} is not the first rule of mangle ${hook}"; return 1; }
}

# guard_ok: the drop rules, the bridge-only forwarding and the pods' missing default route
guard_ok() {
  chain_ok "${GUARD_CHAIN}" POSTROUTING -o || return 1
  chain_ok "${GUARD_IN_CHAIN}" PREROUTING -i || return 1
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
  install_guard "${GUARD_CHAIN}" POSTROUTING -o
  install_guard "${GUARD_IN_CHAIN}" PREROUTING -i
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 0 >/proc/sys/net/ipv4/conf/all/forwarding
  echo 1 >"/proc/sys/net/ipv4/conf/${NODE_BRIDGE}/forwarding"
  local why
  why="$(guard_ok)" || die "network guard check failed: ${why}; refusing to start pods"
  log "network guard in place: ${GUARD_CHAIN}/${GUARD_IN_CHAIN} drop ${POD_CIDR} and ${SERVICE_CIDR} off ${NODE_BRIDGE}; forwarding only on ${NODE_BRIDGE}"
}

network_down() {
  local chain hook
  for chain in "${GUARD_CHAIN}:POSTROUTING" "${GUARD_IN_CHAIN}:PREROUTING"; do
    hook="${chain#*:}"; chain="${chain%%:*}"
    while iptables -w -t mangle -D "${hook}" -j "${chain}" 2>/dev/null; do :; done
    iptables -w -t mangle -F "${chain}" 2>/dev/null || true
    iptables -w -t mangle -X "${chain}" 2>/dev/null || true
  done
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
      "isGateway": false,
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
  # every registry is 127.0.0.1:1 (nothing listens): a missing image fails at once and no
  # pull ever leaves the machine; images come from make images only
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "${NODE_DIR}/certs.d"
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
  mkdir -p "${NODE_DIR}/certs.d/_default"
  cat >"${NODE_DIR}/certs.d/_default/hosts.toml" <<EOF
server = "https://127.0.0.1:1"

[host."https://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
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
healthzBindAddress: 127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT}
metricsBindAddress: 127.0.0.1:${KUBE_PROXY_METRICS_PORT}
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
  local archive name ref
  for archive in "${IMAGES_DIR}"/*.oci.tar; do
    ctr_ images import --snapshotter overlayfs "${archive}" >/dev/null 2>&1 \
      || die "ctr images import ${archive} failed"
  done
  # pods pin images by digest: give each image its repo@sha256 name too (what a pull would)
  local have
  while read -r name ref; do
    have="$(ctr_ images ls 2>/dev/null | awk -v n="${name}" '$1 == n {print $3}')"
    [[ "${ref}" == *"@${have}" ]] || die "${name} in ${IMAGES_DIR} is ${have:-missing}, images.json says ${ref}: run 'make images'"
    ctr_ images rm "${ref}" >/dev/null 2>&1 || true
    ctr_ images tag "${name}" "${ref}" >/dev/null 2>&1 || die "ctr images tag ${name} ${ref} failed"
  done < <(python3 -c 'import json,sys
for i in json.load(open(sys.argv[1]))["images"].values(): print(i["repository"] + ":" + i["tag"], i["image"])' "${DIGESTS_FILE}")
  log "images imported into containerd (${IMAGES_DIR})"
}

# Pods reach the API server as in any cluster, through the `kubernetes` Service: kube-proxy
# sends 10.96.0.1:443 to the node address, where socat hands the connection to the API server
# on loopback (it binds 127.0.0.1 only). The API server's endpoint reconciler is off, so the
# EndpointSlice is written here.
apiserver_bridge() {
  start apiserver-bridge socat "TCP-LISTEN:${API_PORT},bind=${NODE_IP},reuseaddr,fork" "TCP:127.0.0.1:${API_PORT}"
  kc apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: secureai-local-cluster
addressType: IPv4
endpoints:
- addresses: ["${NODE_IP}"]
  conditions: {ready: true}
ports:
- name: https
  port: ${API_PORT}
  protocol: TCP
EOF
}

node_ready() {
  [[ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

node_registered() { kc get node "${NODE_NAME}" >/dev/null 2>&1; }

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
  read -r KUBELET_HEALTHZ_PORT KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT <<<"$(free_ports 3)"
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
  start kube-proxy "${BINDIR}/kube-proxy" --config="${NODE_DIR}/kube-proxy.yaml"
  apiserver_bridge
  start kubelet "${BINDIR}/kubelet" --config="${NODE_DIR}/kubelet.yaml" \
    --kubeconfig="${STATE}/kubelet.kubeconfig" --root-dir="${NODE_DIR}/kubelet" \
    --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}" \
    --node-labels="type=real,secureai.dev/pool=real,secureai.dev/node=real"
  wait_until "node ${NODE_NAME} registered" kubelet node_registered
  # kube-router finds its node object at start: after kubelet registered it, before any pod
  start kube-router "${BINDIR}/kube-router" --kubeconfig="${STATE}/kube-router.kubeconfig" \
    --hostname-override="${NODE_NAME}" --run-firewall=true --run-router=false --run-service-proxy=false \
    --run-loadbalancer=false --enable-ipv4=true --enable-ipv6=false --enable-cni=false \
    --metrics-port=0 --health-port=0 --iptables-sync-period=5m --v=1
  wait_until "node ${NODE_NAME} Ready" kubelet node_ready
  kc patch node "${NODE_NAME}" --type=merge -p "{\"spec\":{\"podCIDR\":\"${NODE_POD_CIDR}\",\"podCIDRs\":[\"${NODE_POD_CIDR}\"]}}" >/dev/null 2>&1 || true
  wait_until "kube-router's firewall chains" kube-router kube_router_ready
  local why_guard
  why_guard="$(guard_ok)" || die "network guard check failed after start: ${why_guard}"
  echo "REAL_NODE=1" >>"${STATE}/cluster.env"
  echo "REAL_NODE_NAME=${NODE_NAME}" >>"${STATE}/cluster.env"
  echo "REAL_NODE_IP=${NODE_IP}" >>"${STATE}/cluster.env"
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
