"""watch's decisions (supervise.decide) over time: when an unhealthy instance is restarted, when it
is left alone, how restarts in a row back off and end in a crash-loop report."""

from __future__ import annotations

from orchestrator.supervise import GIVE_UP, RESTART, Policy, Seen, Tracked, decide, restarted

POLICY = Policy(backoff_s=10, backoff_max_s=40, max_restarts=3, healthy_reset_s=100)


def seen(health: str, *, state: str = "running", after: int = 30, container: str = "c1") -> list[Seen]:
    return [Seen("chat", container, state, health, after)]


def run(tracked: dict[str, Tracked], health: str, at: float, **kwargs) -> list[str]:
    """One round at time `at`; the restarts it decides are carried out."""
    decisions = decide(tracked, seen(health, **kwargs), at, POLICY)
    for decision in decisions:
        if decision.kind == RESTART:
            restarted(tracked, decision.instance, at)
    return [d.kind for d in decisions]


def test_restarted_only_after_being_unhealthy_longer_than_its_setting():
    tracked: dict[str, Tracked] = {}
    assert run(tracked, "unhealthy", 0) == []
    assert run(tracked, "unhealthy", 30) == []  # exactly the limit: not yet
    assert run(tracked, "unhealthy", 31) == [RESTART]


def test_a_healthy_or_starting_instance_is_never_restarted():
    tracked: dict[str, Tracked] = {}
    for at in range(0, 1000, 50):
        assert run(tracked, "healthy", at) == []
        assert run(tracked, "starting", at + 1) == []  # the start period: failures do not count


def test_a_stopped_container_or_one_without_health_check_is_left_to_docker():
    tracked: dict[str, Tracked] = {}
    for at in range(0, 200, 10):
        assert run(tracked, "", at) == []
        assert run(tracked, "unhealthy", at + 1, state="exited") == []


def test_zero_means_never():
    tracked: dict[str, Tracked] = {}
    assert [run(tracked, "unhealthy", at, after=0) for at in range(0, 5000, 100)] == [[]] * 50


def test_a_recovery_resets_the_unhealthy_clock():
    tracked: dict[str, Tracked] = {}
    run(tracked, "unhealthy", 0)
    run(tracked, "healthy", 20)
    assert run(tracked, "unhealthy", 25) == []
    assert run(tracked, "unhealthy", 50) == []  # 25 s unhealthy, not 50
    assert run(tracked, "unhealthy", 56) == [RESTART]


def test_restarts_in_a_row_back_off_exponentially_then_give_up_once():
    tracked: dict[str, Tracked] = {}
    restarts_at = []
    gave_up = []
    for at in range(0, 400):
        # after each restart: a start period (starting), then unhealthy again
        memory = tracked.get("chat")
        health = "starting" if memory and memory.last_restart is not None and at - memory.last_restart < 5 \
            else "unhealthy"
        kinds = run(tracked, health, at)
        restarts_at += [at] * kinds.count(RESTART)
        gave_up += [at] * kinds.count(GIVE_UP)
    assert len(restarts_at) == 3 and len(gave_up) == 1
    gaps = [b - a for a, b in zip(restarts_at, restarts_at[1:])]
    # each waits for 30 s of failure after its start period, and at least the doubling backoff
    assert gaps[0] >= 36 and gaps[1] >= 36
    assert gave_up[0] > restarts_at[-1]


def test_the_backoff_doubles_up_to_its_cap():
    assert [POLICY.backoff(n) for n in range(0, 6)] == [0, 10, 20, 40, 40, 40]


def test_staying_healthy_ends_the_series():
    tracked: dict[str, Tracked] = {}
    run(tracked, "unhealthy", 0)
    assert run(tracked, "unhealthy", 31) == [RESTART]
    for at in range(40, 150, 5):
        run(tracked, "healthy", at)
    assert tracked["chat"].restarts == 0


def test_a_recreated_container_starts_afresh():
    tracked: dict[str, Tracked] = {}
    run(tracked, "unhealthy", 0)
    assert run(tracked, "unhealthy", 20, container="c2") == []  # `up` made a new one: its clock starts now
    assert run(tracked, "unhealthy", 45, container="c2") == []
    assert run(tracked, "unhealthy", 51, container="c2") == [RESTART]


def test_instances_that_went_away_are_forgotten():
    tracked: dict[str, Tracked] = {}
    run(tracked, "unhealthy", 0)
    decide(tracked, [], 1, POLICY)
    assert tracked == {}
