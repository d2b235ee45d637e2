"""Planning with measured kernel times (`masic.targets.machine.Measured`, `masic compile --profile`): each call
site's time found by its kernel description key (`masic.analysis.kernel_key`) before and after fusion, the
estimate scaled where nothing matches, and the table a profile gives (`masic.profile.measured_machine`)."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest
from masic.frontends.norse import import_norse
from masic.targets import get_target
from masic.targets.machine import DEFAULT_MACHINE, Machine, Measured

from masic.analysis.cost import (
    estimated_seconds,
    inference_seconds_per_call_site,
    measured_call_sites,
    planned_latency,
    step_seconds,
)
from masic.analysis.kernel_key import fusion_candidate, node_key, pair_key, site_key
from masic.ir.graph import Graph, Schedule
from masic.opt import run_passes
from masic.passes import PassOptions
from masic.profile import ProfileError, measured_machine
from tests.norse_models import MODELS, wide_dense_model
from tests.pipelines import planned, prepared
from tests.test_profile import run_profile

MACHINE = Machine(1e9, 1e9, 1e8)


def _planned_conv() -> Graph:
    factory, shape = MODELS["conv"]
    graph = planned(import_norse(factory(), shape, timesteps=4), PassOptions(alignment=16, machine=MACHINE))
    assert any(n.attr("fused") for n in graph.nodes), "the conv model has a fused neuron"
    return graph


def _table(graph: Graph) -> dict[str, float]:
    """A distinct made-up time per call site's key."""
    sites = inference_seconds_per_call_site(graph, MACHINE)
    return {site_key(graph.node(name), graph): (i + 1) * 1e-3 for i, name in enumerate(sites)}


def test_every_matched_call_site_takes_its_measured_time_and_a_fused_neuron_none() -> None:
    graph = _planned_conv()
    table = _table(graph)
    machine = replace(MACHINE, measured=Measured(table, scale=5.0, overhead_seconds=0.25))
    planned_sites = inference_seconds_per_call_site(graph, machine)
    for name, seconds in planned_sites.items():
        assert seconds == pytest.approx(graph.timesteps * table[site_key(graph.node(name), graph)])
    assert set(measured_call_sites(graph, machine)) == set(planned_sites)
    step = sum(table[site_key(graph.node(name), graph)] for name in planned_sites)
    assert step_seconds(graph, machine) == pytest.approx(step)
    assert planned_latency(graph, graph.schedule, machine) == pytest.approx(graph.timesteps * step + 0.25)
    # each read of a streamed weight adds the measured hand-over wait (reads themselves take no time here)
    waits = replace(machine, read_bytes_per_second=1e30, measured=replace(machine.measured, wait_per_load_seconds=0.5))
    streamed = replace(graph.schedule, streamed=tuple(p.name for p in graph.params[:2]))
    blocks = -(-graph.timesteps // streamed.block)
    extra = planned_latency(graph, streamed, waits) - planned_latency(graph, graph.schedule, waits)
    assert extra == pytest.approx(blocks * 2 * 0.5)


def test_the_schedule_pass_sees_the_same_times_before_fusion_and_layouts() -> None:
    """The keys the artifact records after every pass match the graph the schedule pass ranks plans on."""
    factory, shape = MODELS["conv"]
    graph = _planned_conv()
    machine = replace(MACHINE, measured=Measured(_table(graph)))
    before = prepared(import_norse(factory(), shape, timesteps=4), "layout", PassOptions(alignment=16, machine=MACHINE))
    assert not any(n.attr("fused") for n in before.nodes) and before.schedule == graph.schedule
    assert step_seconds(before, machine) == pytest.approx(step_seconds(graph, machine))


def test_call_sites_without_a_match_take_the_estimate_scaled() -> None:
    graph = _planned_conv()
    sites = list(inference_seconds_per_call_site(graph, MACHINE))
    matched = graph.node(sites[0])
    machine = replace(MACHINE, measured=Measured({site_key(matched, graph): 7e-3}, scale=3.0))
    planned_sites = inference_seconds_per_call_site(graph, machine)
    estimated = inference_seconds_per_call_site(graph, MACHINE)
    assert planned_sites[matched.name] == pytest.approx(graph.timesteps * 7e-3)
    for name in sites[1:]:
        assert planned_sites[name] == pytest.approx(3.0 * estimated[name])
    assert measured_call_sites(graph, machine) == [matched.name]


def test_a_key_names_no_node_and_no_planning_choice() -> None:
    graph = _planned_conv()
    conv = next(n for n in graph.nodes if n.op == "conv2d")
    renamed = replace(conv.with_attrs(layout="NCHW8c"), name="another")
    assert node_key(renamed, graph.with_nodes([*graph.nodes, renamed])) == node_key(conv, graph)
    wider = conv.with_attrs(stride=(2, 2))
    assert node_key(wider, graph) != node_key(conv, graph)
    assert estimated_seconds(conv, graph, MACHINE) > 0


def _collected(**changes: object) -> dict:
    """A profile as `masic profile` leaves it: call sites conv (50 us over 2 steps) and cat (40 us), keyed."""
    profile = {**run_profile(1, 0), "target": "x86_64", "timesteps": 2}
    profile |= {"keys": {"conv": "K", "cat": "K"}, "estimated_us": {"conv": 100.0, "cat": 10.0}}
    return profile | changes


def test_a_profile_gives_seconds_per_step_by_key_the_median_ratio_and_the_read_rate() -> None:
    target = get_target("x86_64")
    machine = measured_machine(target, _collected(), "p.json")
    assert machine.measured is not None
    assert machine.measured.seconds == {"K": statistics.median([50e-6 / 2, 40e-6 / 2])}  # one key, two sites
    assert machine.measured.scale == pytest.approx(statistics.median([50 / 100, 40 / 10]))
    assert machine.measured.overhead_seconds == pytest.approx((100 - 90 - 0.5) * 1e-6)
    assert machine.read_bytes_per_second == 128e6
    assert machine.measured.wait_per_load_seconds == pytest.approx(0.5e-6 / 2)  # 2 reads; the bandwidth kept up
    assert machine.macs_per_second == target.machine.macs_per_second  # the estimates stay for what did not run
    # the time outside the kernels is the run less the call sites' medians, whatever the median of the kernels' sum
    medians_apart = measured_machine(target, _collected(kernels_us=70.0), "p.json").measured
    assert medians_apart is not None and medians_apart.overhead_seconds == machine.measured.overhead_seconds
    other = measured_machine(target, _collected(keys={"conv": "K", "cat": "L"}), "p.json")
    assert other.measured is not None and other.measured.seconds == {"K": 25e-6, "L": 20e-6}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"target": "aarch64"}, "p.json was measured for target aarch64, not x86_64; profile an artifact built for"),
        ({"keys": None}, "p.json is not a profile masic profile wrote: keys, estimated_us or timesteps missing"),
        ({"keys": {}, "estimated_us": {}}, "p.json times no kernel call the cost model plans"),
    ],
)
def test_a_profile_that_cannot_plan_is_refused_in_one_line(changes: dict, problem: str) -> None:
    with pytest.raises(ProfileError) as refused:
        measured_machine(get_target("x86_64"), _collected(**changes), "p.json")
    assert str(refused.value).startswith(problem) and "\n" not in str(refused.value)


def test_the_schedule_pass_ranks_plans_by_the_measured_times() -> None:
    """A dense layer beyond the cache makes blocks of 4 pay by the estimates; measured one step per call and fast,
    with every other call (steps per call: 4) left to a slow scaled estimate, the schedule keeps one step per block."""
    graph = prepared(import_norse(wide_dense_model(), timesteps=4), "schedule")
    assert run_passes(graph, ["schedule"]).schedule.block == 4
    one_step = replace(graph, schedule=Schedule(1, carry_state=True))
    table = {}
    for node in one_step.nodes:
        neuron = fusion_candidate(node, one_step)
        table[pair_key(node, neuron, one_step) if neuron else node_key(node, one_step)] = 1e-9
    measured = replace(DEFAULT_MACHINE, measured=Measured(table, scale=100.0))
    assert run_passes(graph, ["schedule"], PassOptions(machine=measured)).schedule.block == 1
