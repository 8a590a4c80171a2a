"""A real node beside the fake GPU nodes: containerd (runc, CNI bridge), the kubelet, kube-proxy (iptables)
and CoreDNS, all as processes of the local cluster, their files in the node's folder of its state.

Opt-in (`KUBETUNE_REAL_NODE=1 make cluster`; on for tests/node). The node is labelled and tainted
(`kubetune.io/real-node`), so only pods that select and tolerate it land there; the KWOK nodes stay. No
registry is reachable: the images are imported into containerd from the local containers storage, and pods
use fixed tags with `IfNotPresent`.

The kubelet and kube-proxy change host settings (sysctls, iptables chains, cgroups, a bridge): the host's
values are saved before they start and `stop` puts them back, so `make cluster-down` leaves the machine as
found. Only one real node runs on a machine at a time (the bridge, the Service rules and the pod cgroups are
the host's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

NODE_NAME = "kubetune-node"
NODE_LABEL = "kubetune.io/real-node"
# What a pod needs to land on the real node.
PLACEMENT = {
    "nodeSelector": {NODE_LABEL: "true"},
    "tolerations": [{"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}


def chart_values() -> list[str]:
    """helm values that put the chart's operator Deployment on the real node."""
    return [
        "--set-json", f"nodeSelector={json.dumps(PLACEMENT['nodeSelector'])}",
        "--set-json", f"tolerations={json.dumps(PLACEMENT['tolerations'])}",
    ]  # fmt: skip


POD_CIDR = "10.244.0.0/24"
BRIDGE = "kubetune0"
CNI_NETWORK = "kubetune-node"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/kubetune/pause:3.10"
CONTAINERD_NAMESPACE = "k8s.io"
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")

# Host settings the kubelet (kernel defaults), kube-proxy and the CNI bridge (forwarding) may change.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Folders the node's programs make at fixed places whatever they are told: libcni's cache, the kubelet's
# device-plugin socket folder, the shims' runtime state. Removed at stop when they were not there at start.
FIXED_FOLDERS = ("/var/lib/cni", "/var/lib/kubelet", "/run/containerd")
# One real node per machine (its bridge, its fixed folders and the images' containerd root are the
# machine's): the state folder of the cluster that holds it.
HOLDER = Path("/run/kubetune-real-node")


def host_ip() -> str:
    """The address of the host's default route: the node's InternalIP, where pods reach the API server."""
    out = subprocess.run(["ip", "-j", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]["prefsrc"]


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the node (tests/cluster/install-node-tools.sh installs it)."""
    tools = ("containerd", "ctr", "runc", "iptables", "podman", "skopeo", "buildah")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def holder() -> Path | None:
    """The state folder of the cluster whose real node runs on this machine, if any."""
    try:
        return Path(HOLDER.read_text().strip())
    except OSError:
        return None


# --- host state ------------------------------------------------------------------------------------


def save_host(path: Path) -> None:
    """The sysctls' values and which fixed folders exist, before the node changes them."""
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    absent = [folder for folder in FIXED_FOLDERS if not Path(folder).exists()]
    path.write_text(json.dumps({"sysctls": values, "absent": absent}, indent=2))


def restore_host(path: Path) -> None:
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    for name, value in saved["sysctls"].items():
        with contextlib.suppress(OSError):
            target = Path("/proc/sys") / name
            if target.read_text().strip() != value:
                target.write_text(value)
    for folder in saved["absent"]:
        remove_if_emptied(Path(folder))


def remove_if_emptied(folder: Path) -> None:
    """Removes the folder's sockets and empty folders, deepest first: what another program (podman's CNI
    state in /var/lib/cni) put there since keeps it."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            if path.is_socket():
                path.unlink()
            elif path.is_dir() and not path.is_symlink():
                path.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def iptables_cleanup(listing: str, network: str = CNI_NETWORK) -> tuple[list[list[str]], list[str]]:
    """From one table's `iptables -S`: the rules to delete (as `-D` arguments) and the chains to flush and
    remove. Those of kube-proxy and the kubelet (KUBE-*) and of this node's CNI network (its masquerade and
    portmap chains, whose rules name the network in a comment); other programs' rules (podman's) stay."""
    lines = listing.splitlines()
    names_us = f'name: \\"{network}\\"'
    chains = {line.split()[1] for line in lines if line.startswith("-N KUBE-")}
    for line in lines:
        if line.startswith("-A ") and names_us in line and (jump := re.search(r"-j (CNI-[\w-]+)", line)):
            chains.add(jump.group(1))
    rules = []
    for line in lines:
        if not line.startswith("-A ") or line.split()[1] in chains:
            continue  # a chain's own rules go with it
        jump = re.search(r"-j (\S+)", line)
        if (jump and jump.group(1) in chains) or names_us in line:
            rules.append(shlex.split(line[3:]))
    return rules, sorted(chains)


def remove_iptables_rules() -> None:
    """Deletes what iptables_cleanup finds, in the nat, filter and mangle tables."""
    for table in ("nat", "filter", "mangle"):
        listing = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
        if listing.returncode != 0:
            continue
        rules, chains = iptables_cleanup(listing.stdout)
        for rule in rules:
            subprocess.run(["iptables", "-t", table, "-D", *rule], capture_output=True)
        for flag in ("-F", "-X"):
            for chain in chains:
                subprocess.run(["iptables", "-t", table, flag, chain], capture_output=True)


def remove_pod_cgroups() -> None:
    """The kubelet's `kubepods` hierarchy in each cgroup v1 controller (empty once the pods are gone)."""
    for controller in CGROUP_ROOT.iterdir() if CGROUP_ROOT.exists() else ():
        top = controller / "kubepods"
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def unmount_under(folder: Path) -> None:
    """Unmounts what containerd and the kubelet mounted in the node's folder (deepest first)."""
    prefix = str(folder.resolve())
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def kill_shims(socket: Path) -> None:
    """containerd's shims (and the containers they hold) outlive containerd: those of this node's socket."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"containerd-shim" in argv[0] and str(socket).encode() in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)


def remove_bridge() -> None:
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)


# --- configuration ---------------------------------------------------------------------------------


def containerd_config(folder: Path, images: Path) -> str:
    """containerd 1.6's CRI: runc with cgroupfs, this node's CNI network, the local pause image; its images
    (root) in a cache kept across clusters, its state in the node's folder."""
    return f"""version = 2
root = "{images}"
state = "{folder / "containerd" / "state"}"
[grpc]
  address = "{folder / "containerd" / "containerd.sock"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{folder / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root may not lower a process's oom_score_adj in this kind of VM: every sandbox failed without it.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{folder / "cni"}"
"""


def cni_config(folder: Path) -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(folder / "cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(folder: Path, ca: Path, address: str, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 (hybrid) on this kind of machine: kubelet 1.35+ refuses it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "address": address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(folder / "pod-logs"),
        "registerWithTaints": [{"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}],
        # The images cannot be pulled again (no registry): never collect them, and never evict for a disk
        # that the rest of the machine fills.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "maxPods": 30,
    }


def kube_proxy_config(kubeconfig: Path, address: str, metrics_port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": address,
        "clusterCIDR": POD_CIDR,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "nodePortAddresses": [f"{address}/32"],
        # Leave the host's sysctls alone: no conntrack limits or timeouts, no route_localnet.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False},
    }


def corefile(address: str, port: int, kubeconfig: Path) -> str:
    return f""".:{port} {{
    bind {address}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} kubetune-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
}}
"""


def dns_manifests(address: str, port: int) -> list[dict]:
    """CoreDNS runs on the host: the kube-dns Service points at it through a hand-made EndpointSlice; RBAC
    lets its client certificate read what it serves."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kubetune:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubetune:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kubetune:coredns",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubetune:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "kube-apiserver-kubelet-client",
                }
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-host",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "kubetune.io-localcluster",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": port, "protocol": "UDP"},
                {"name": "dns-tcp", "port": port, "protocol": "TCP"},
            ],
        },
    ]


# --- images ----------------------------------------------------------------------------------------


def ctr(socket: Path, *args: str, input_stream=None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", CONTAINERD_NAMESPACE, *args],
        stdin=input_stream,
        capture_output=True,
        text=input_stream is None,
        timeout=timeout,
        check=True,
    )


def image_id(name: str) -> str | None:
    result = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def import_image(socket: Path, name: str, stamps: Path) -> float | None:
    """Streams the image from the local containers storage into containerd (no archive on disk); skipped
    when containerd already holds this image id. Returns the seconds it took, None when skipped."""
    wanted = image_id(name)
    if wanted is None:
        raise RuntimeError(f"image {name} is not in the local containers storage (make images)")
    stamp = stamps / (re.sub(r"[^\w.-]", "_", name) + ".id")
    present = name in ctr(socket, "images", "ls", "-q").stdout.split()
    if present and stamp.exists() and stamp.read_text() == wanted:
        return None
    started = time.monotonic()
    # Streamed into ctr; skopeo (as `podman save`) still spools each layer to a temporary file first (a
    # docker-archive names a layer's size before its bytes): the trainer's 7 GB pass through /var/tmp once.
    with tempfile.TemporaryFile() as errors:  # the storage library's info lines stay out of the demo's screen
        save = subprocess.Popen(
            ["skopeo", "copy", "--quiet", f"containers-storage:{name}", f"docker-archive:/dev/stdout:{name}"],
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        try:
            ctr(socket, "images", "import", "-", input_stream=save.stdout)
        finally:
            save.stdout.close()
            if save.wait() != 0:
                errors.seek(0)
                raise RuntimeError(f"skopeo copy {name} failed: {errors.read().decode(errors='replace')}")
    discard_unpacked_layers(socket, name)
    stamp.write_text(wanted)
    return time.monotonic() - started


def image_layers(socket: Path, manifest_digest: str) -> set[str]:
    manifest = json.loads(ctr(socket, "content", "get", manifest_digest).stdout)
    if "manifests" in manifest:  # an index: the linux/amd64 image's
        platform = {"os": "linux", "architecture": "amd64"}
        chosen = next(m for m in manifest["manifests"] if m.get("platform", platform) == platform)
        return image_layers(socket, chosen["digest"])
    return {layer["digest"] for layer in manifest["layers"]}


def discard_unpacked_layers(socket: Path, name: str) -> None:
    """Removes the image's layer archives once they are unpacked into snapshots, as the CRI's
    `discard_unpacked_layers` does for pulled images: containers start from the snapshots (every image here
    is unpacked at import), and the trainer's 7 GB are kept once on the disk, not twice."""
    digests = {
        line.split()[0]: line.split()[2] for line in ctr(socket, "images", "ls").stdout.splitlines()[1:]
    }
    present = set(ctr(socket, "content", "ls", "-q").stdout.split())
    layers = image_layers(socket, digests[name]) & present
    if layers:
        ctr(socket, "content", "rm", *sorted(layers))


def build_pause_image(pause_binary: Path, workdir: Path) -> None:
    """The sandbox image: build.sh's static pause binary alone, committed to the local containers storage."""
    if image_id(PAUSE_IMAGE):
        return
    container = subprocess.run(["buildah", "from", "scratch"], capture_output=True, text=True, check=True)
    name = container.stdout.strip()
    try:
        subprocess.run(
            ["buildah", "copy", name, str(pause_binary), "/pause"], capture_output=True, check=True
        )
        subprocess.run(
            ["buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", name],
            capture_output=True,
            check=True,
        )
        subprocess.run(["buildah", "commit", "--quiet", name, PAUSE_IMAGE], capture_output=True, check=True)
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True)


# --- lifecycle -------------------------------------------------------------------------------------


def folder_of(state: Path) -> Path:
    return state / "node"


def socket_of(state: Path) -> Path:
    return folder_of(state) / "containerd" / "containerd.sock"


def images_root(cache: Path) -> Path:
    """containerd's root (its content and snapshots): a cache kept across clusters, as the built binaries
    are, so that the 7 GB trainer image is imported once, not at every bring-up."""
    return cache / "node-images"


def start(info, address: str) -> dict[str, float]:
    """Starts containerd, imports the pause image, then CoreDNS, kube-proxy and the kubelet; waits for the
    node to be Ready. Returns how long each step took (seconds)."""
    from tests.cluster import localcluster as lc

    state = Path(info.state_dir)
    folder = folder_of(state)
    pki = state / "pki"
    bins = lc.binaries()
    timings: dict[str, float] = {}
    started = time.monotonic()
    for sub in ("containerd", "cni", "cni-ipam", "pod-logs", "kubelet", "certs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    save_host(folder / "host.json")
    HOLDER.write_text(str(state))
    images = images_root(lc.CACHE)
    images.mkdir(parents=True, exist_ok=True)
    (folder / "containerd" / "config.toml").write_text(containerd_config(folder, images))
    (folder / "cni" / "10-kubetune-node.conflist").write_text(json.dumps(cni_config(folder), indent=2))
    ports = {
        name: lc.free_port()
        for name in ("kubelet", "kubelet-healthz", "kube-proxy-metrics", "kube-proxy-healthz", "coredns")
    }
    info.real_node = {"name": NODE_NAME, "address": address, "ports": ports, "folder": str(folder)}
    info.save()

    socket = socket_of(state)
    info.pids["containerd"] = lc.start_process(
        "containerd",
        ["containerd", "--config", str(folder / "containerd" / "config.toml"), "--log-level", "warn"],
    )
    info.save()
    lc.wait_for(
        "containerd",
        lambda: ctr(socket, "version").returncode == 0,
        timeout=30,
        logs=state / "logs" / "containerd.log",
    )
    build_pause_image(bins["pause"], folder)
    import_image(socket, PAUSE_IMAGE, images)
    timings["containerd"] = time.monotonic() - started

    for user in ("kubelet", "kube-proxy", "coredns"):
        lc.write_kubeconfig(
            state / f"{user}.kubeconfig", f"https://{address}:{info.ports['kube-apiserver']}", pki, user
        )
    lc.kubectl(
        info,
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": dns_manifests(address, ports["coredns"])}
        ),
    )
    (folder / "Corefile").write_text(corefile(address, ports["coredns"], state / "coredns.kubeconfig"))
    info.pids["coredns"] = lc.start_process(
        "coredns",
        [str(bins["coredns"]), "-conf", str(folder / "Corefile"), "-dns.port", str(ports["coredns"])],
    )
    (folder / "kube-proxy.yaml").write_text(
        json.dumps(
            kube_proxy_config(
                state / "kube-proxy.kubeconfig",
                address,
                ports["kube-proxy-metrics"],
                ports["kube-proxy-healthz"],
            )
        )
    )
    info.pids["kube-proxy"] = lc.start_process(
        "kube-proxy", [str(bins["kube-proxy"]), f"--config={folder / 'kube-proxy.yaml'}"]
    )
    (folder / "kubelet.yaml").write_text(
        json.dumps(
            kubelet_config(folder, pki / "ca.crt", address, ports["kubelet"], ports["kubelet-healthz"])
        )
    )
    kubelet_started = time.monotonic()
    info.pids["kubelet"] = lc.start_process(
        "kubelet",
        [
            str(bins["kubelet"]),
            f"--config={folder / 'kubelet.yaml'}",
            f"--kubeconfig={state / 'kubelet.kubeconfig'}",
            f"--container-runtime-endpoint=unix://{socket}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={address}",
            f"--root-dir={folder / 'kubelet'}",
            f"--cert-dir={folder / 'certs'}",
            f"--node-labels={NODE_LABEL}=true",
            "--v=1",
        ],
    )
    info.save()
    lc.wait_for(
        "the real node to be Ready", lambda: node_ready(info), timeout=90, logs=state / "logs" / "kubelet.log"
    )
    timings["kubelet-to-ready"] = time.monotonic() - kubelet_started
    timings["node"] = time.monotonic() - started
    info.real_node["timings"] = {k: round(v, 1) for k, v in timings.items()}
    info.save()
    return timings


def import_images(info, names: list[str]) -> dict[str, float | None]:
    """The images named, from the local containers storage into the node's containerd (skipped when there
    already); the seconds each took."""
    from tests.cluster import localcluster as lc

    socket = socket_of(Path(info.state_dir))
    return {name: import_image(socket, name, images_root(lc.CACHE)) for name in names}


def node_ready(info) -> bool:
    from tests.cluster import localcluster as lc

    node = json.loads(lc.kubectl(info, "get", "node", NODE_NAME, "-o", "json"))
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


def stop(info) -> None:
    """Stops the node and puts the host back: its pods removed through the kubelet (their sandboxes' network
    torn down by CNI), kube-proxy's rules cleaned, the processes stopped, mounts, cgroups, chains, the bridge
    and the sysctls undone."""
    from tests.cluster import localcluster as lc

    state = Path(info.state_dir)
    folder = folder_of(state)
    api_answers = lc.apiserver_ready(info.server, state / "pki")
    if info.pids.get("kubelet") and lc.pid_alive(info.pids["kubelet"]) and api_answers:
        with contextlib.suppress(Exception):
            lc.kubectl(info, "cordon", NODE_NAME)
            lc.run(
                [
                    info.kubectl,
                    "--kubeconfig",
                    info.kubeconfig,
                    "delete",
                    "pods",
                    "--all-namespaces",
                    f"--field-selector=spec.nodeName={NODE_NAME}",
                    "--grace-period=1",
                    "--timeout=60s",
                ],
                timeout=90,
            )
    for name in ("kubelet", "kube-proxy", "coredns"):
        terminate(info.pids.get(name))
    bins = lc.binaries()
    if bins["kube-proxy"].exists():
        subprocess.run([str(bins["kube-proxy"]), "--cleanup"], capture_output=True, timeout=60)
    kill_shims(socket_of(state))
    terminate(info.pids.get("containerd"))
    unmount_under(folder)
    remove_pod_cgroups()
    remove_iptables_rules()
    remove_bridge()
    restore_host(folder / "host.json")
    if holder() == state:
        HOLDER.unlink(missing_ok=True)


def terminate(pid: int | None, timeout: float = 15.0) -> None:
    from tests.cluster import localcluster as lc

    if not pid or not lc.pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while lc.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def memory_mib(info) -> dict[str, float]:
    """Resident memory of the node's processes and of its pods' shims, in MiB."""
    usage = {}
    for name in NODE_COMPONENTS:
        pid = info.pids.get(name)
        with contextlib.suppress(OSError, TypeError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    usage[name] = int(line.split()[1]) / 1024
    return usage
