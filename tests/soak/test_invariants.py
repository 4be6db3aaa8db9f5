"""The soak's judge flags what it must (and only that), on recorded data."""

from __future__ import annotations

from tests.soak.faults import Fault
from tests.soak.invariants import (
    Epoch,
    attribute,
    check_envoys,
    check_experiments,
    tracebacks,
)
from tests.soak.watch import (
    ROUTE_CONFIG,
    EnvoySample,
    ExperimentLog,
    ExperimentView,
    Request,
    read_config_dump,
)

EPOCH = Epoch(100.0, "soak-1", "v1", "v2", 90)


def split(t: float, v2: int, envoy: str = "gw-0") -> EnvoySample:
    return EnvoySample(t, envoy, {"chat/v1": 100 - v2, "chat/v2": v2}, ())


def log_with(*decisions: tuple[float, str]) -> ExperimentLog:
    log = ExperimentLog()
    log.decisions[("soak-1", "r1")] = [{"t": t, "event": e} for t, e in decisions]
    return log


def test_a_split_that_goes_back_without_a_rollback_is_a_reset() -> None:
    samples = [split(101, 0), split(102, 20), split(103, 30), split(104, 0), split(105, 30)]
    [problem] = check_envoys(samples, [EPOCH], log_with((100.5, "start")))
    assert "went from 30% to 0%" in problem and "reset split" in problem


def test_a_split_that_goes_back_after_a_rollback_is_fine() -> None:
    samples = [split(101, 20), split(103, 30), split(106, 0), split(107, 0)]
    assert check_envoys(samples, [EPOCH], log_with((105.0, "rollback"))) == []
    # the rollback must come before the drop is seen
    assert check_envoys(samples, [EPOCH], log_with((106.5, "rollback"))) != []


def test_a_new_run_may_start_lower_and_jumps_need_a_promotion() -> None:
    second = Epoch(200.0, "soak-2", "v2", "v1", 90)
    samples = [split(150, 80), split(190, 100), split(201, 100), split(202, 80)]
    assert check_envoys(samples[:2], [EPOCH], log_with((180.0, "promote"))) == []
    # v2 down to 80 % is a reset within soak-1, but the start of soak-2 (v1 the candidate)
    assert check_envoys(samples, [EPOCH], log_with((180.0, "promote"))) != []
    assert check_envoys(samples, [EPOCH, second], log_with((180.0, "promote"))) == []
    jumped = check_envoys([split(150, 80), split(151, 100)], [EPOCH], log_with())
    assert len(jumped) == 1 and "before any promotion" in jumped[0]


def test_routes_to_unwarmed_clusters_and_vanished_routes_are_flagged() -> None:
    samples = [EnvoySample(101, "gw-1", {"chat/v1": 100}, ("chat/v3",)),
               EnvoySample(102, "gw-1", None, ())]
    problems = check_envoys(samples, [EPOCH], log_with())
    assert any("unwarmed" in p and "chat/v3" in p for p in problems)
    assert any("disappeared" in p for p in problems)


def test_read_config_dump_finds_the_split_and_unwarmed_clusters() -> None:
    doc = {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "static_clusters": [{"cluster": {"name": "sluice_xds"}}],
         "dynamic_active_clusters": [{"cluster": {"name": "chat/v1"}}],
         "dynamic_warming_clusters": [{"cluster": {"name": "chat/v2"}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
         "dynamic_route_configs": [{"route_config": {"name": ROUTE_CONFIG, "virtual_hosts": [
             {"routes": [{"route": {"weighted_clusters": {"clusters": [
                 {"name": "chat/v1", "weight": 80}, {"name": "chat/v2", "weight": 20}]}}}]}]}}]},
    ]}
    weights, unwarmed = read_config_dump(doc)
    assert weights == {"chat/v1": 80, "chat/v2": 20} and unwarmed == ("chat/v2",)


def view(t: float, phase: str, step: int, run: str = "r1") -> ExperimentView:
    return ExperimentView(t, "soak-1", run, phase, step)


def test_phase_step_and_run_never_go_back() -> None:
    log = log_with()
    log.views = [view(101, "Progressing", 0), view(102, "Holding", 1), view(103, "Progressing", 2),
                 view(104, "Promoting", 2), view(105, "Succeeded", 2)]
    assert check_experiments(log, [EPOCH]) == []
    log.views += [view(106, "Progressing", 1, run="r2")]
    problems = check_experiments(log, [EPOCH])
    assert len(problems) == 3 and any("run changed" in p for p in problems)


def test_a_rollback_excuses_a_step_back_but_not_a_phase_back() -> None:
    log = log_with((102.5, "rollback"))
    log.views = [view(102, "Progressing", 3), view(103, "RollingBack", 0),
                 view(104, "RolledBack", 0), view(105, "Progressing", 0)]
    [problem] = check_experiments(log, [EPOCH])
    assert "phase went back RolledBack -> Progressing" in problem


def test_failures_are_attributed_to_pod_faults_in_flight_or_to_nothing() -> None:
    crash = Fault("pod_crash", 200.0, pod=1)
    hang = Fault("pod_hang", 300.0, pod=2, window=(300.0, 304.0))
    requests = [
        Request(199.8, 200.1, 503, None, None),  # in flight at the crash
        Request(302.0, 310.0, 0, None, None, "TimeoutError: "),  # timed out on the hang
        Request(302.0, 302.1, 503, None, None),  # a fast 503 during the hang: not the hang's
        Request(250.0, 250.1, 0, None, None, "ClientConnectorError: refused"),
        Request(250.0, 250.1, 200, "v1", "127.0.0.1:1"),
    ]
    causes = attribute(requests, [crash, hang])
    assert [len(causes[k]) for k in causes] == [1, 1, 2]


def test_tracebacks_in_the_log_are_found() -> None:
    text = ("2026 INFO ok\n2026 ERROR sluice.rollout: soak-1: run failed\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
            "ZeroDivisionError: float division by zero\n2026 INFO next\n")
    assert tracebacks(text) == ["2026 ERROR sluice.rollout: soak-1: run failed / "
                                "ZeroDivisionError: float division by zero"]
