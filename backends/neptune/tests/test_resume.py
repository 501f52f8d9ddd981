"""Resuming a run in offline mode: what the Neptune 1.x client really does.

An offline run cannot be reopened (``init_run(with_id=...)`` needs a server), so the delivery after
``init(resume=...)`` writes a second offline container. ``neptune sync`` registers one server run
per container id (neptune/cli/containers.py, ``register_offline_container`` calls
``create_run(project.id)`` without the custom run id), so the parts stay separate runs there; both
carry ``loggerhub/run_id`` and ``loggerhub/part``.
"""

from __future__ import annotations

from pathlib import Path

from loggerhub_neptune import offline


def test_resume_writes_a_second_part_of_the_same_run(tmp_path: Path) -> None:
    import loggerhub

    options = {"neptune": {"mode": "offline", "data_dir": str(tmp_path / "neptune")}}
    with loggerhub.init(project="p", name="resumable", dir=tmp_path / "runs", backends=["neptune"],
                        options=options, config={"lr": 0.1}, tags={"team": "vision"},
                        drain_timeout=120) as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    with loggerhub.init(resume=run.dir, backends=["neptune"], options=options, drain_timeout=120) as again:
        for step in range(5, 10):
            again.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        again.log_text("notes", "after resume", step=9)
    assert again.id == run.id
    assert again.summary["trackers"]["neptune"]["undelivered"] == 0

    parts = offline.read_run(tmp_path / "neptune", run.id)
    assert len(parts) == 2
    assert len(offline.find_containers(tmp_path / "neptune")) == 2
    first, second = (p["fields"] for p in parts)
    assert parts[0]["container_id"] != parts[1]["container_id"]
    assert [first["loggerhub/part"]["value"], second["loggerhub/part"]["value"]] == [1, 2]
    assert first["loggerhub/status"]["value"] == second["loggerhub/status"]["value"] == "FINISHED"
    assert [v["step"] for v in first["loss"]["values"]] == [0, 1, 2, 3, 4]
    assert [v["step"] for v in second["loss"]["values"]] == [5, 6, 7, 8, 9]
    # Each part is self-describing, since each becomes its own run when synced.
    for fields in (first, second):
        assert fields["sys/name"]["value"] == "resumable"
        assert fields["sys/tags"]["values"] == ["team:vision"]
        assert fields["parameters/lr"]["value"] == 0.1
    assert "notes" not in first and second["notes"]["values"][0]["value"] == "after resume"

    merged = offline.merge_parts(parts)
    assert [v["step"] for v in merged["loss"]["values"]] == list(range(10))

    from loggerhub.delivery import ConsumerStatus

    state = ConsumerStatus.load(again.paths.consumer_file("neptune")).state
    assert state is not None
    assert state["custom_run_id"] == run.id
    assert [c["container_id"] for c in offline.run_containers(tmp_path / "neptune", run.id)] == [
        p["container_id"] for p in parts]
