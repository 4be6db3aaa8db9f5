"""Kubernetes mode (``sluice serve --kubernetes``; DESIGN §9).

- ``client``: the official ``kubernetes`` client (in-cluster or kubeconfig
  credentials) as raw JSON calls on any resource, and watch streams;
- ``informer``: list + watch of one resource into a cache (resourceVersion,
  bookmarks, a re-list on ``410 Gone``), in a thread of its own;
- ``endpoints`` (pure) and ``discovery``: EndpointSlices or pods → endpoints;
- ``crds`` (the CRDs, generated from the field language) and ``resources``
  (custom resources → documents of the usual loader);
- ``leader``: a ``coordination.k8s.io/v1`` Lease; ``journal``: the rollout's
  durable records in ConfigMaps; ``traffic``: followers mirror the leader's
  traffic; ``status``: the leader writes the CRs' status;
- ``mode``: wires them into the ``App``.
"""

GROUP = "sluice.dev"
VERSION = "v1alpha1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sluice"}
