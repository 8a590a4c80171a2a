#!/usr/bin/env bash
# The real node's runtime, from Debian's packages: containerd (with runc) runs the pods, the CNI plugins
# (bridge, host-local, portmap, loopback) wire them, iptables and conntrack carry kube-proxy's Services.
# Idempotent: does nothing when every tool is present. The kubelet, kube-proxy and CoreDNS are built by
# build.sh like the control plane.
#
# Debian's containerd is 1.6: kubelet 1.36 runs on it (it warns that 1.37 drops runtimes without the CRI's
# RuntimeConfig); containerd v2 built from source would add several minutes to a cold CI run for a warning.
set -euo pipefail
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} (apt-get)" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The package's service is not started here (no init system in CI): the cluster driver runs containerd
# itself with its own config, root and socket in the node's folder.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
