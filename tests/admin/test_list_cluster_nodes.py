"""fanout's ``list_cluster_nodes`` (Janus has no cluster): on a standalone node, a clear error. The
reply of a node in a cluster is checked against real nodes in tests/cluster/test_cluster_processes.py."""

from fanout.admin.api import AdminApi
from fanout.config.settings import Settings

from tests.core.harness import Core


async def test_a_standalone_node_says_it_is_not_in_a_cluster() -> None:
    admin = AdminApi(Core().gateway)
    reply = await admin.handle_request({"janus": "list_cluster_nodes", "transaction": "t"})
    assert reply == {
        "janus": "error",
        "transaction": "t",
        "error": {"code": 453, "reason": "This node is not in a cluster (janus.jcfg has no cluster.redis_url)"},
    }


async def test_it_needs_the_admin_secret() -> None:
    admin = AdminApi(Core(settings=Settings(admin_secret="overlord")).gateway)
    reply = await admin.handle_request({"janus": "list_cluster_nodes", "transaction": "t"})
    assert reply["error"]["code"] == 403
