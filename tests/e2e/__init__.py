"""End-to-end tests on the rig's real node: pods really run (containerd, runc, CNI, kubelet, kube-proxy)."""
