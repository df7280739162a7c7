"""The cluster: an origin node's mountpoints served by edge nodes (``relay``: the media
path between them; ``sealed``: the nodes' messages, sealed under the cluster secret)."""
