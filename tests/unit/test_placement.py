"""The placement decision (sfu.cluster.memory.choose_worker) and a worker's limits."""

from sfu.cluster.coordinator import NodeInfo, WorkerLoad
from sfu.cluster.memory import choose_worker, placement_order


def load(worker_id: str, **fields) -> WorkerLoad:
    node_id = worker_id.split("/")[0]
    return WorkerLoad(worker_id=worker_id, node_id=node_id, url=f"http://{node_id}", **fields)


def on(node_id: str, draining: bool = False) -> NodeInfo:
    return NodeInfo(node_id=node_id, public_url=f"https://{node_id}", draining=draining)


def test_a_worker_is_under_its_limit_until_it_reaches_max_tracks_or_the_cpu_ceiling():
    assert load("a/0", tracks=10_000, cpu_percent=400.0).under_limit()  # 0: no limit
    assert load("a/0", tracks=9, max_tracks=10).under_limit()
    assert not load("a/0", tracks=10, max_tracks=10).under_limit()
    assert load("a/0", cpu_percent=79.9, max_cpu_percent=80.0).under_limit()
    assert not load("a/0", cpu_percent=80.0, max_cpu_percent=80.0).under_limit()


def test_fewest_tracks_first_then_the_preferred_node_then_the_fewest_rooms_then_the_id():
    workers = [load("b/1", tracks=3, rooms=1), load("a/0", tracks=3, rooms=5), load("b/0", tracks=3, rooms=1)]
    ordered = sorted(workers, key=lambda w: placement_order(w, "a"))
    assert [w.worker_id for w in ordered] == ["a/0", "b/0", "b/1"]
    ordered = sorted(workers, key=lambda w: placement_order(w, None))
    assert [w.worker_id for w in ordered] == ["b/0", "b/1", "a/0"]
    assert placement_order(load("c/0", tracks=2, rooms=9), "a") < placement_order(load("a/0", tracks=3), "a")


def test_choose_worker_skips_draining_nodes_draining_workers_and_workers_at_their_limit():
    candidates = [
        (on("a", draining=True), load("a/0")),
        (on("b"), load("b/0", tracks=8, max_tracks=8)),
        (on("c"), load("c/0", tracks=50, cpu_percent=85.0, max_cpu_percent=80.0)),
        (on("d"), load("d/0", tracks=70)),
        (on("d"), load("d/1", tracks=0, draining=True)),
    ]
    chosen = choose_worker(candidates, prefer_node="a")
    assert chosen is not None and chosen.worker_id == "d/0"
    assert choose_worker(candidates[:3]) is None
    assert choose_worker([]) is None
