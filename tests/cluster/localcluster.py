"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK.

Real upstream programs at the versions pinned in versions.env, built once by build.sh into a cache
outside the repository. The cluster's state (certificates, etcd data, logs, process ids) lives in one
directory; `up` starts what is not running and reuses a cluster that is, `down` stops it and removes
the state. Everything listens on 127.0.0.1, on ports picked free at start.

KWOK plays the kubelet of fake nodes that advertise `nvidia.com/gpu`; kwok-stages.yaml says how pods
on them live and die (and how a test makes one fail with a chosen exit code), kwok-config.yaml how many
pods it plays at once.

With KUBETUNE_REAL_NODE=1 a real node joins them (realnode.py: containerd, the kubelet, kube-proxy,
CoreDNS): the API server then listens on the host's address too, so that pods reach it through the
`kubernetes` Service, and dials the kubelet with a client certificate.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.cluster import realnode

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))
STATE = Path(os.environ.get("KUBETUNE_CLUSTER_DIR", CACHE / "cluster"))

SERVICE_CIDR = "10.96.0.0/12"
KUBERNETES_SERVICE_IP = "10.96.0.1"
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


# Admission plugins enabled beyond kube-apiserver's defaults.
ADMISSION_PLUGINS = ("OwnerReferencesPermissionEnforcement",)


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def read_versions() -> dict[str, str]:
    versions = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key] = value
    return versions


def binaries() -> dict[str, Path]:
    """Where build.sh leaves each binary."""
    v = read_versions()
    kube = CACHE / f"kubernetes-{v['KUBERNETES_VERSION']}" / "bin"
    layer_name, _, layer_version = v["KUBECTL_LAYER_PACKAGE"].partition("==")
    tools = CACHE / f"{layer_name}-{layer_version}" / "bin"
    return {
        "etcd": CACHE / f"etcd-{v['ETCD_VERSION']}" / "bin" / "etcd",
        "kube-apiserver": kube / "kube-apiserver",
        "kube-controller-manager": kube / "kube-controller-manager",
        "kube-scheduler": kube / "kube-scheduler",
        "kwok": CACHE / f"kwok-{v['KWOK_VERSION']}" / "bin" / "kwok",
        "kubectl": tools / "kubectl",
        "helm": tools / "helm",
        # The real node's (KUBETUNE_REAL_NODE=1).
        "kubelet": kube / "kubelet",
        "kube-proxy": kube / "kube-proxy",
        "coredns": CACHE / f"coredns-{v['COREDNS_VERSION']}" / "bin" / "coredns",
        "pause": CACHE / f"pause-{v['PAUSE_VERSION']}" / "bin" / "pause",
    }


# The real node's binaries beyond the control plane's (build.sh builds kubelet and kube-proxy with the
# control plane, from the same source; CoreDNS and pause are components of their own).
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns", "pause")


def build(real_node: bool = True) -> None:
    """Builds whatever binary is missing (a no-op when all are cached); the real node's CoreDNS and pause only
    with `real_node` (the demo's cluster has none: CoreDNS is most of two minutes of a first build)."""
    wanted = {name: path for name, path in binaries().items() if real_node or name not in NODE_BINARIES}
    if all(path.exists() for path in wanted.values()):
        return
    log("building the control plane's binaries (first time only; see tests/cluster/build.sh)")
    components = [] if real_node else ["kubectl", "etcd", "kwok", "kubernetes"]  # none: all of them
    subprocess.run(["bash", str(HERE / "build.sh"), *components], check=True)


@dataclass
class NodePool:
    """The fake GPU nodes: how many, how many GPUs each, and their labels."""

    count: int = 2
    gpus_per_node: int = 8
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    cpu: str = "96"
    memory: str = "1Ti"
    name_prefix: str = "gpu-node"
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> NodePool:
        labels = {}
        for pair in filter(None, os.environ.get("KUBETUNE_NODE_LABELS", "").split(",")):
            key, _, value = pair.partition("=")
            labels[key.strip()] = value.strip()
        return cls(
            count=int(os.environ.get("KUBETUNE_GPU_NODES", "2")),
            gpus_per_node=int(os.environ.get("KUBETUNE_GPUS_PER_NODE", "8")),
            gpu_product=os.environ.get("KUBETUNE_GPU_PRODUCT", cls.gpu_product),
            labels=labels,
        )

    def manifests(self) -> list[dict]:
        return [self.node(i) for i in range(self.count)]

    def node(self, index: int) -> dict:
        name = f"{self.name_prefix}-{index}"
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": "110",
            "ephemeral-storage": "2Ti",
            self.gpu_resource: str(self.gpus_per_node),
        }
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.gpu_product,
            "nvidia.com/gpu.count": str(self.gpus_per_node),
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1]},
            },
            "status": {"capacity": resources, "allocatable": resources},
        }


@dataclass
class ClusterInfo:
    """What a running cluster is: written to cluster.json, read by tests and by `status`."""

    state_dir: str
    kubeconfig: str
    server: str
    ports: dict[str, int]
    pids: dict[str, int]
    versions: dict[str, str]
    bin_dir: str
    nodes: dict
    real_node: dict | None = None  # realnode.start's: its name, address, ports and folder

    @classmethod
    def load(cls, state: Path | None = None) -> ClusterInfo | None:
        path = (state or STATE) / "cluster.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self) -> None:
        (Path(self.state_dir) / "cluster.json").write_text(json.dumps(asdict(self), indent=2))

    @property
    def kubectl(self) -> str:
        return str(Path(self.bin_dir) / "kubectl")

    @property
    def helm(self) -> str:
        return str(Path(self.bin_dir) / "helm")


# --- small utilities -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not reaped) counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def wait_for(what: str, check, timeout: float = 60.0, interval: float = 0.25, logs: Path | None = None):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # the thing is not up yet; keep the last reason for the message
            last_error = error
        time.sleep(interval)
    tail = ""
    if logs and logs.exists():
        tail = "\n".join(logs.read_text(errors="replace").splitlines()[-30:])
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}: {last_error}\n{tail}")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({result.returncode}): {result.stderr.strip()}")
    return result


# --- certificates ----------------------------------------------------------------------------------


def make_pki(pki: Path, node_ip: str | None = None) -> None:
    """A CA, the API server's serving certificate, client certificates and the service-account keys; with a
    real node (at node_ip), the host's address in the serving certificate and its components' clients."""
    pki.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl") or "openssl"
    run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-keyout",
            str(pki / "ca.key"),
            "-out",
            str(pki / "ca.crt"),
            "-subj",
            "/CN=kubetune-local-ca",
        ]
    )

    def issue(name: str, subject: str, extensions: str) -> None:
        key, csr, crt = (pki / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        run(
            [
                openssl,
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(csr),
                "-subj",
                subject,
            ]
        )
        ext_file = pki / f"{name}.ext"
        ext_file.write_text(extensions)
        run(
            [
                openssl,
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(pki / "ca.crt"),
                "-CAkey",
                str(pki / "ca.key"),
                "-CAcreateserial",
                "-days",
                "3650",
                "-out",
                str(crt),
                "-extfile",
                str(ext_file),
            ]
        )
        csr.unlink()
        ext_file.unlink()

    sans = ",".join(
        [
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "IP:127.0.0.1",
            f"IP:{KUBERNETES_SERVICE_IP}",
            *([f"IP:{node_ip}"] if node_ip else []),
        ]
    )
    issue(
        "apiserver",
        "/CN=kube-apiserver",
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    issue("admin", "/O=system:masters/CN=kubetune-admin", client_ext)
    issue("controller-manager", "/CN=system:kube-controller-manager", client_ext)
    issue("scheduler", "/CN=system:kube-scheduler", client_ext)
    issue("kwok", "/O=system:masters/CN=kwok-controller", client_ext)
    if node_ip:
        issue("kubelet", "/O=system:nodes/CN=system:node:kubetune-node", client_ext)
        issue("kube-proxy", "/CN=system:kube-proxy", client_ext)
        issue("coredns", "/CN=system:coredns", client_ext)
        issue("apiserver-kubelet-client", "/CN=kube-apiserver-kubelet-client", client_ext)
    run([openssl, "genrsa", "-out", str(pki / "sa.key"), "2048"])
    run([openssl, "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubetune-local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{user}.crt"),
                    "client-key": str(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "kubetune-local", "context": {"cluster": "kubetune-local", "user": user}}],
        "current-context": "kubetune-local",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML; no yaml dependency needed here


# --- processes -------------------------------------------------------------------------------------


def start_process(name: str, argv: list[str]) -> int:
    log_path = STATE / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=STATE,
        )
    return process.pid


def apiserver_ready(server: str, pki: Path) -> bool:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def etcd_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return json.loads(response.read()).get("health") == "true"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def kubectl(info: ClusterInfo, *args: str, input: str | None = None) -> str:
    return run([info.kubectl, "--kubeconfig", info.kubeconfig, *args], input=input).stdout


# --- lifecycle -------------------------------------------------------------------------------------


def running() -> ClusterInfo | None:
    """The running cluster, when every process is alive and the API server answers."""
    info = ClusterInfo.load()
    if info is None:
        return None
    components = COMPONENTS + (realnode.NODE_COMPONENTS if info.real_node else ())
    if not all(pid_alive(info.pids.get(c, -1)) for c in components):
        return None
    if not apiserver_ready(info.server, Path(info.state_dir) / "pki"):
        return None
    return info


def real_node_wanted() -> bool:
    return os.environ.get("KUBETUNE_REAL_NODE") == "1"


def reusable(real_node: bool | None = None) -> ClusterInfo | None:
    """The running cluster, when it has the node asked for (a real one, or none): `up` returns it as it is.
    A caller that stops only a cluster it started asks this first."""
    real_node = real_node_wanted() if real_node is None else real_node
    info = running()
    return info if info is not None and (info.real_node is not None) == real_node else None


def up(pool: NodePool | None = None, real_node: bool | None = None) -> ClusterInfo:
    """Starts the control plane (and the real node when asked), or returns the one already running."""
    real_node = real_node_wanted() if real_node is None else real_node
    if (reused := reusable(real_node)) is not None:
        return with_node_images(reused)
    if (info := running()) is not None:
        # Both ways: a test session must not find a demo's in-cluster operator on a node it did not ask for.
        log(f"the running cluster {'has no' if real_node else 'has a'} real node; starting it again "
            f"{'with' if real_node else 'without'} one")  # fmt: skip
    if ClusterInfo.load() is not None or STATE.exists():
        log("found a stopped or broken cluster; removing its state")
        down()
    if real_node and (other := realnode.holder()) not in (None, STATE):
        # A node is the machine's (its bridge, folders, containerd root): the last cluster asking takes it.
        log(f"the real node is the cluster's in {other}: stopping that cluster (one real node per machine)")
        down(other)
        realnode.HOLDER.unlink(missing_ok=True)
    build(real_node=real_node)
    pool = pool or NodePool.from_env()
    started = time.monotonic()
    bins = binaries()
    STATE.mkdir(parents=True, exist_ok=True)
    pki = STATE / "pki"
    node_ip = realnode.host_ip() if real_node else None
    if real_node and (missing := realnode.missing_prerequisites()):
        raise RuntimeError(f"the real node needs {', '.join(missing)} (tests/cluster/install-node-tools.sh)")
    make_pki(pki, node_ip)

    ports = {
        name: free_port()
        for name in (
            "etcd",
            "etcd-peer",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        )
    }
    if node_ip:
        # Pods reach the API server at the host's address (the `kubernetes` Service's endpoint).
        apiserver_network = [
            "--bind-address=0.0.0.0",
            f"--advertise-address={node_ip}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ]
    else:
        # 127.0.0.1 cannot be a Service's endpoint: nothing reconciles the `kubernetes` Service's.
        apiserver_network = [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
        ]
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    for user in ("admin", "controller-manager", "scheduler", "kwok"):
        write_kubeconfig(STATE / f"{user}.kubeconfig", server, pki, user)
    pids: dict[str, int] = {}
    info = ClusterInfo(
        state_dir=str(STATE),
        kubeconfig=str(STATE / "admin.kubeconfig"),
        server=server,
        ports=ports,
        pids=pids,
        versions=read_versions(),
        bin_dir=str(bins["kubectl"].parent),
        nodes=asdict(pool),
    )
    info.save()  # saved early so that `down` can clean up a half-started cluster

    etcd_port, peer_port = ports["etcd"], ports["etcd-peer"]
    pids["etcd"] = start_process(
        "etcd",
        [
            str(bins["etcd"]),
            "--name=kubetune",
            f"--data-dir={STATE / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=kubetune=http://127.0.0.1:{peer_port}",
            "--listen-metrics-urls=",
            "--quota-backend-bytes=4294967296",
            # A throwaway test cluster: no fsync keeps etcd from being the bottleneck on a slow disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
    )
    info.save()
    wait_for("etcd", lambda: etcd_healthy(etcd_port), logs=STATE / "logs" / "etcd.log")

    pids["kube-apiserver"] = start_process(
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            *apiserver_network,
            f"--secure-port={ports['kube-apiserver']}",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # On top of the default plugins (PodSecurity among them): as OpenShift does, setting
            # blockOwnerDeletion needs `update` on the owner's finalizers, so the chart's RBAC is proven.
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            "--allow-privileged=true",
            "--event-ttl=2h",
            "--max-requests-inflight=800",
            "--max-mutating-requests-inflight=400",
            "--profiling=false",
        ],
    )
    info.save()
    wait_for(
        "kube-apiserver",
        lambda: apiserver_ready(server, pki),
        timeout=90,
        logs=STATE / "logs" / "kube-apiserver.log",
    )

    pids["kube-controller-manager"] = start_process(
        "kube-controller-manager",
        [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-job-syncs=20",
            "--profiling=false",
        ],
    )
    pids["kube-scheduler"] = start_process(
        "kube-scheduler",
        [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ],
    )
    pids["kwok"] = start_process(
        "kwok",
        [
            str(bins["kwok"]),
            f"--kubeconfig={STATE / 'kwok.kubeconfig'}",
            f"--config={HERE / 'kwok-config.yaml'}",
            f"--config={HERE / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION[0]}={FAKE_NODE_ANNOTATION[1]}",
            "--cidr=10.0.0.1/16",
            "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ],
    )
    info.save()

    add_nodes(info, pool)
    wait_for(
        "the default ServiceAccount",
        lambda: _has_default_service_account(info),
        timeout=60,
        logs=STATE / "logs" / "kube-controller-manager.log",
    )
    log(f"control plane up in {time.monotonic() - started:.1f}s at {server}")
    if node_ip:
        timings = realnode.start(info, node_ip)
        log(f"real node {realnode.NODE_NAME} Ready in {timings['node']:.1f}s "
            f"(kubelet start to Ready {timings['kubelet-to-ready']:.1f}s)")  # fmt: skip
    return with_node_images(info)


def with_node_images(info: ClusterInfo) -> ClusterInfo:
    """Imports the images KUBETUNE_NODE_IMAGES names into the real node (no registry to pull them from)."""
    names = os.environ.get("KUBETUNE_NODE_IMAGES", "").split()
    for name in [n for n in names if realnode.image_id(n) is None]:
        log(f"{name}: not in the local containers storage (make images); not imported")
        names.remove(name)
    if info.real_node is not None and names:
        for name, took in realnode.import_images(info, names).items():
            log(f"{name}: {'already in the node' if took is None else f'imported in {took:.0f}s'}")
    return info


def token_kubeconfig(
    info: ClusterInfo, namespace: str, service_account: str, path: Path, duration: str = "2h"
) -> Path:
    """A kubeconfig with a bound token of the ServiceAccount: what its pod's projected token holds."""
    token = kubectl(
        info, "create", "token", service_account, "-n", namespace, f"--duration={duration}"
    ).strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": info.server,
                    "certificate-authority": str(Path(info.state_dir) / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "local",
                "context": {"cluster": "local", "user": service_account, "namespace": namespace},
            }
        ],
        "current-context": "local",
    }
    path.write_text(json.dumps(config))
    return path


def shared_claim(namespace: str, path: Path, size: str = "100Gi") -> list[dict]:
    """A ReadWriteMany claim `shared` in `namespace`, bound to a PersistentVolume on a directory here."""
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-shared", "labels": {"test.kubetune.io/namespace": namespace}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": namespace, "name": "shared"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "shared", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "resources": {"requests": {"storage": size}},
            },
        },
    ]


def add_nodes(info: ClusterInfo, pool: NodePool, timeout: float = 60.0) -> list[str]:
    """Creates fake GPU nodes and waits until they are Ready and schedulable."""
    manifests = pool.manifests()
    kubectl(
        info, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    )
    names = [m["metadata"]["name"] for m in manifests]

    def all_ready() -> bool:
        nodes = json.loads(kubectl(info, "get", "nodes", "-o", "json"))["items"]
        by_name = {n["metadata"]["name"]: n for n in nodes}
        for name in names:
            node = by_name.get(name)
            if node is None:
                return False
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )
            # The node lifecycle controller lifts the not-ready taint once the node reports Ready.
            if not ready or node.get("spec", {}).get("taints"):
                return False
        return True

    wait_for(
        f"nodes {', '.join(names)} to be Ready", all_ready, timeout=timeout, logs=STATE / "logs" / "kwok.log"
    )
    return names


def _has_default_service_account(info: ClusterInfo) -> bool:
    out = kubectl(info, "get", "serviceaccount", "default", "-n", "default", "-o", "name")
    return out.strip() == "serviceaccount/default"


def down(state: Path | None = None) -> None:
    """Stops every process of the cluster in `state` (this one's by default) and removes its state."""
    state = state or STATE
    info = ClusterInfo.load(state)
    if info is not None and info.real_node is not None:
        realnode.stop(info)
    if info is not None:
        # Reverse order: the clients first, etcd last.
        for name in reversed(COMPONENTS):
            pid = info.pids.get(name)
            if pid and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for pid in info.pids.values():
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
    if state.exists():
        shutil.rmtree(state, ignore_errors=True)


def memory_mib(info: ClusterInfo) -> dict[str, float]:
    """Resident memory of each control-plane process, in MiB."""
    usage = {}
    for name, pid in info.pids.items():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    usage[name] = int(line.split()[1]) / 1024
    return usage


def cpu_seconds(info: ClusterInfo) -> dict[str, float]:
    """CPU time (user and system) each control-plane process has used so far, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in info.pids.items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            used[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="build what is missing and start the cluster (or reuse it)")
    up_parser.add_argument("--nodes", type=int, help="fake GPU nodes (default 2, or KUBETUNE_GPU_NODES)")
    up_parser.add_argument("--gpus-per-node", type=int, help="GPUs per node (default 8)")
    up_parser.add_argument("--label", action="append", default=[], help="extra node label k=v")
    up_parser.add_argument("--real-node", action="store_true", default=None,
                           help="a real node too (containerd, kubelet; or KUBETUNE_REAL_NODE=1)")  # fmt: skip
    sub.add_parser("down", help="stop the cluster and remove its state")
    sub.add_parser("status", help="print the running cluster, its versions and memory")
    build_parser = sub.add_parser("build", help="build the binaries only")
    build_parser.add_argument(
        "--no-real-node", action="store_true", help="the control plane's alone, not the real node's CoreDNS"
    )
    args = parser.parse_args(argv)

    if args.command == "build":
        build(real_node=not args.no_real_node)
        return 0
    if args.command == "down":
        down()
        log("stopped; state removed")
        return 0
    if args.command == "status":
        info = running()
        if info is None:
            print("not running")
            return 1
        print(
            json.dumps(
                {
                    "server": info.server,
                    "kubeconfig": info.kubeconfig,
                    "versions": info.versions,
                    "memory_mib": memory_mib(info),
                    **({"real_node": info.real_node} if info.real_node else {}),
                },
                indent=2,
            )
        )
        return 0

    pool = NodePool.from_env()
    if args.nodes is not None:
        pool.count = args.nodes
    if args.gpus_per_node is not None:
        pool.gpus_per_node = args.gpus_per_node
    for pair in args.label:
        key, _, value = pair.partition("=")
        pool.labels[key] = value
    info = up(pool, real_node=args.real_node)
    print(f"export PATH={info.bin_dir}:$PATH")
    print(f"export KUBECONFIG={info.kubeconfig}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["ClusterInfo", "NodePool", "add_nodes", "binaries", "build", "down", "running", "up"]
