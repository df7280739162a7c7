"""The cluster: nodes that find each other in Redis, share their mountpoints and place viewers.

``records`` (what a node writes, signed), ``registry`` (Redis), ``load``,
``placement``, ``remote`` (the cluster's mountpoints on this node), ``node``
(a node's life in the cluster) and ``routes`` (HTTP: placement, WHEP 307);
``relay`` (the media path between an origin and its edges) and ``sealed`` (the
nodes' messages, sealed under the cluster secret).
"""
