"""kiln's local multi-cluster Kubernetes control plane, built from real parts.

Modules: common (errors, logging, the tool folder), ports (the shared port
registry), pki (certificates and kubeconfigs), layout (cluster specs, node
manifests, component command lines and health probes), supervisor (the
process that owns a run directory's components) and cli (the commands).
Real nodes: realnode (bring-up and teardown of a run's real nodes), nodeconfig
(the kubelet's, kube-proxy's and CoreDNS's configuration, labels), nodenet
(namespaces' network, address slots, the API forwarder), containerd (its
config, the pause image, image import), cgroups, ociimage (OCI archives).
scripts/localcluster.py is the entry point.

Each cluster is an etcd, a kube-apiserver (RBAC, client-certificate auth with
certificates made by openssl), a kube-controller-manager, a kube-scheduler and
kwok, which plays the kubelets of fake GPU nodes; with --real-nodes N also N
real nodes (kubelet, containerd, kube-proxy; CoreDNS per cluster) whose pods
really run. Everything runs under one supervisor process per run directory,
the control plane on loopback; the supervisor kills every component when told
to stop, when its owner process exits, or when it dies itself (children carry
PR_SET_PDEATHSIG).

Commands:
  up            start N clusters in DIR, wait until ready, print kubeconfig paths
  import-image  import OCI archives into the real nodes' containerd
  down          stop everything started in DIR and verify nothing is left behind
  restart       stop one component, keep it down a while, start it again
  status        show the components of DIR and whether they run
  env           print shell exports for DIR's kubeconfigs

Ports come from below the kernel's ephemeral range and are reserved in a shared
registry under a lock, so parallel runs on one machine never collide.
"""
