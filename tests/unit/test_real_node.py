"""The real node's pure parts: its components' settings and what `cluster-down` removes from iptables."""

from __future__ import annotations

from pathlib import Path

from tests.cluster import realnode

FOLDER = Path("/state/node")


def test_the_kubelet_is_set_for_this_kind_of_machine_and_keeps_its_files_in_the_nodes_folder() -> None:
    config = realnode.kubelet_config(FOLDER, Path("/state/pki/ca.crt"), "192.0.2.2", 10250, 10248)
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["podLogsDir"].startswith(str(FOLDER))
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["registerWithTaints"] == [
        {"key": realnode.NODE_LABEL, "value": "true", "effect": "NoSchedule"}
    ]
    assert config["clusterDNS"] == [realnode.DNS_SERVICE_IP]
    # The images cannot be pulled again: never collected.
    assert config["imageGCHighThresholdPercent"] == 100


def test_pods_placed_on_the_real_node_select_and_tolerate_it() -> None:
    taint = realnode.kubelet_config(FOLDER, Path("ca.crt"), "192.0.2.2", 1, 2)["registerWithTaints"][0]
    (toleration,) = realnode.PLACEMENT["tolerations"]
    assert toleration["key"] == taint["key"] and toleration["effect"] == taint["effect"]
    assert realnode.PLACEMENT["nodeSelector"] == {realnode.NODE_LABEL: "true"}


def test_containerd_restricts_oom_score_adj_and_uses_the_nodes_network_and_pause_image() -> None:
    config = realnode.containerd_config(FOLDER, Path("/cache/node-images"))
    assert "restrict_oom_score_adj = true" in config
    assert f'sandbox_image = "{realnode.PAUSE_IMAGE}"' in config
    assert f'conf_dir = "{FOLDER / "cni"}"' in config
    assert 'root = "/cache/node-images"' in config and "SystemdCgroup = false" in config


def test_kube_proxy_leaves_the_hosts_sysctls_alone() -> None:
    config = realnode.kube_proxy_config(Path("kube-proxy.kubeconfig"), "192.0.2.2", 1, 2)
    assert config["mode"] == "iptables"
    assert config["conntrack"]["maxPerCore"] == 0 and config["conntrack"]["min"] == 0
    assert config["conntrack"]["tcpEstablishedTimeout"] == config["conntrack"]["tcpCloseWaitTimeout"] == "0s"
    assert config["iptables"]["localhostNodePorts"] is False  # else route_localnet=1


NAT = """-P PREROUTING ACCEPT
-P POSTROUTING ACCEPT
-N CNI-1111
-N CNI-2222
-N KUBE-SERVICES
-N KUBE-POSTROUTING
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.244.0.5/32 -m comment --comment "name: \\"kubetune-node\\" id: \\"abc\\"" -j CNI-1111
-A POSTROUTING -s 10.88.0.3/32 -m comment --comment "name: \\"podman\\" id: \\"def\\"" -j CNI-2222
-A CNI-1111 -d 10.244.0.0/24 -m comment --comment "name: \\"kubetune-node\\" id: \\"abc\\"" -j ACCEPT
-A CNI-2222 -d 10.88.0.0/16 -m comment --comment "name: \\"podman\\" id: \\"def\\"" -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j KUBE-SVC-NPX46M4PTMTKRN6Y
"""


def test_cluster_down_removes_the_nodes_rules_and_leaves_podmans() -> None:
    rules, chains = realnode.iptables_cleanup(NAT)
    assert chains == ["CNI-1111", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    assert [rule[-1] for rule in rules] == ["KUBE-SERVICES", "KUBE-POSTROUTING", "CNI-1111"]
    assert all("CNI-2222" not in rule for rule in rules)
    # Each rule as `iptables -D` takes it: the comment one argument.
    assert 'name: "kubetune-node" id: "abc"' in rules[2]
