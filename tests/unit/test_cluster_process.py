"""The pure pieces of the process model: settings handed to a worker, its slice of the ICE
port range, participant id prefixes, load reports, the relay's reading of a first message,
and the front's merge of its workers' metrics."""

import os

import pytest

from sfu.cluster.internal import (
    LoadReport,
    RoomReport,
    WorkerSpec,
    ice_port_slice,
    participant_id_prefix,
    worker_config,
)
from sfu.cluster.node import labelled, merge_families
from sfu.cluster.relay import room_of
from sfu.config import Config, ConfigError, from_file, load
from sfu.signaling.messages import ROOM_RE

SECRET = "s" * 40


def test_workers_split_the_ice_port_range_without_overlap_or_gap():
    config = Config(ice_port_min=40000, ice_port_max=40099)
    slices = [ice_port_slice(config, i, 3) for i in range(3)]
    assert slices == [(40000, 40032), (40033, 40065), (40066, 40099)]
    assert ice_port_slice(Config(), 1, 3) == (0, 0), "no range: any port"


def test_a_worker_runs_as_one_plain_process_on_the_internal_address():
    node = Config(
        host="0.0.0.0",
        auth_secret=SECRET,
        workers=4,
        cluster_host="10.0.0.2",
        ice_port_min=40000,
        ice_port_max=40399,
        redis_url="redis://r:6379/0",
        cluster_secret=SECRET,
    )
    worker = worker_config(node, 1, 4, 9101).validate()
    assert (worker.host, worker.port, worker.workers, worker.redis_url) == ("10.0.0.2", 9101, 1, "")
    assert not worker.clustered
    assert (worker.ice_port_min, worker.ice_port_max) == (40100, 40199)
    assert worker.auth_secret == SECRET and not worker.open_rooms, "tokens are checked the same on the worker"
    # Open rooms on a loopback node stay open on a worker listening elsewhere.
    open_node = Config(workers=2, cluster_host="10.0.0.2")
    assert worker_config(open_node, 0, 2, 9100).validate().open_rooms


def test_worker_settings_survive_the_trip_through_stdin():
    config = worker_config(
        Config(
            workers=2, ice_servers=({"urls": "stun:stun.example.com"},), turn_urls=("turn:t:3478",), turn_secret="x"
        ),
        0,
        2,
        9100,
    )
    spec = WorkerSpec("n1/0", SECRET, os.getpid(), config)
    assert WorkerSpec.from_wire(spec.to_wire()) == spec
    with pytest.raises(ValueError):
        WorkerSpec("n1/0", "", 1, config).validated()


def test_participant_id_prefixes_differ_per_worker_and_are_url_safe():
    prefixes = {participant_id_prefix(f"node-{n}/{i}") for n in range(20) for i in range(8)}
    assert len(prefixes) == 160
    assert all(p.replace("-", "").isalnum() for p in prefixes)
    assert participant_id_prefix("a/0") == participant_id_prefix("a/0")


def test_load_reports_survive_the_trip_over_http():
    report = LoadReport("n/1", 123, 8, 2, 12.5, False, (RoomReport("r", (("p1", "alice"), ("p2", "bob"))),))
    assert LoadReport.from_wire(report.to_wire()) == report


def test_workers_option_takes_a_number_or_auto_everywhere(tmp_path):
    cores = os.cpu_count() or 1
    assert load(environ={"SFU_WORKERS": "auto"}).worker_count == cores
    assert load(cli={"workers": 3}, environ={}).worker_count == 3
    path = tmp_path / "sfu.toml"
    path.write_text('workers = "auto"\n')
    assert from_file(path).worker_count == cores
    assert not load(environ={}).clustered, "the default is one plain process"
    assert load(environ={"SFU_WORKERS": "2"}).clustered


def test_cluster_options_are_checked():
    with pytest.raises(ConfigError, match="cluster_secret"):
        load(environ={"SFU_REDIS_URL": "redis://127.0.0.1:6379/0"})
    with pytest.raises(ConfigError, match="redis_url"):
        load(environ={"SFU_REDIS_URL": "http://x", "SFU_CLUSTER_SECRET": SECRET})
    with pytest.raises(ConfigError, match="node_heartbeat_s"):
        load(environ={"SFU_NODE_TTL_S": "2", "SFU_NODE_HEARTBEAT_S": "1.5"})
    with pytest.raises(ConfigError, match="too small"):
        load(environ={"SFU_WORKERS": "8", "SFU_ICE_PORT_MIN": "40000", "SFU_ICE_PORT_MAX": "40009"})
    with pytest.raises(ConfigError, match="wildcard"):
        load(environ={"SFU_WORKERS": "2", "SFU_CLUSTER_HOST": "0.0.0.0"})
    assert "***" in str(
        load(environ={"SFU_REDIS_URL": "redis://:pw@r:6379/0", "SFU_CLUSTER_SECRET": SECRET}).public_view()["redis_url"]
    ), "a Redis URL may carry a password"


def test_the_relay_routes_on_a_valid_room_in_any_first_message():
    assert room_of('{"type": "join", "room": "demo", "name": "a"}') == "demo"
    assert room_of('{"type": "resume", "room": "demo", "token": "t"}') == "demo"
    for text in ('{"type": "ping"}', "not json", "[1]", '{"room": 5}', '{"room": "bad room!"}', '{"room": ""}'):
        assert room_of(text) is None, text
    assert room_of('{"room": "' + "x" * 65 + '"}') is None and ROOM_RE.fullmatch("x" * 64)


WORKER_METRICS = """# HELP sfu_rooms Rooms open
# TYPE sfu_rooms gauge
sfu_rooms 2.0
# HELP sfu_packets_total Packets
# TYPE sfu_packets_total counter
sfu_packets_total{direction="in"} 10.0
"""


def test_the_front_merges_its_workers_metrics_with_node_and_worker_labels():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    groups = [labelled(WORKER_METRICS, {"node": "n", "worker": f"n/{i}"}) for i in range(2)]
    families = merge_families(groups)

    class Fixed(Collector):
        def collect(self):
            yield from families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    assert text.count("# TYPE sfu_rooms gauge") == 1 and text.count("# TYPE sfu_packets_total counter") == 1
    assert 'sfu_rooms{node="n",worker="n/0"} 2.0' in text
    assert 'sfu_packets_total{direction="in",node="n",worker="n/1"} 10.0' in text
