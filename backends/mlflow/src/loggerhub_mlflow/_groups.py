"""Runs of one group (one run per rank of a distributed job) as MLflow nests runs: a parent run
named after the group, and each rank's run under it (the ``mlflow.parentRunId`` tag, which the
MLflow UI shows as an expandable row).

Every rank has its own delivery process, and all of them start at about the same time, so the
parent must be created exactly once among them:

* an exclusive ``fcntl.flock`` on ``<runs folder>/.groups/<group digest>.lock`` (the rank runs of
  a group live in one run store, so every rank's delivery sees the same file) serialises "search,
  then create";
* the search by the ``loggerhub.group.key`` tag finds a parent that an earlier delivery (a re-run,
  a ``loggerhub sync``) created;
* where the lock file is not shared (ranks on hosts without a shared run store), two parents may
  still be created: every process then keeps the oldest one and deletes the one it created, so all
  ranks end up under the same parent.

Imported only by the delivery process (it imports mlflow).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from typing import Any

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from loggerhub_hookspecs import RunInfo

GROUP_TAG = "loggerhub.group"
#: A digest of the group name: any group name is searchable, quotes and all.
GROUP_KEY_TAG = "loggerhub.group.key"
#: ``parent`` on the group's parent run; the rank runs have ``loggerhub.rank`` instead.
GROUP_ROLE_TAG = "loggerhub.group.role"
RANK_TAG = "loggerhub.rank"
WORLD_SIZE_TAG = "loggerhub.world_size"
PARENT_TAG = "mlflow.parentRunId"
LOCK_FOLDER = ".groups"
MAX_TAG_VALUE_LENGTH = 8000
_TERMINATED = frozenset({"FINISHED", "FAILED", "KILLED"})


def group_key(group: str) -> str:
    return hashlib.sha256(group.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def child_name(run: RunInfo) -> str:
    return f"{run.name} rank {run.rank}" if run.rank is not None else run.name


@contextlib.contextmanager
def group_lock(run: RunInfo) -> Iterator[None]:
    """Held while a delivery process looks for, creates or ends its group's parent run."""
    assert run.group is not None
    folder = run.dir.parent / LOCK_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{group_key(run.group)}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def child_tags(client: MlflowClient, experiment_id: str, run: RunInfo, started_ms: int) -> dict[str, str]:
    """The tags that put a rank's run under its group's parent, which this creates if needed."""
    assert run.group is not None
    tags = {GROUP_TAG: run.group[:MAX_TAG_VALUE_LENGTH], GROUP_KEY_TAG: group_key(run.group),
            PARENT_TAG: parent_run(client, experiment_id, run, started_ms)}
    if run.rank is not None:
        tags[RANK_TAG] = str(run.rank)
    if run.world_size is not None:
        tags[WORLD_SIZE_TAG] = str(run.world_size)
    return tags


def parent_run(client: MlflowClient, experiment_id: str, run: RunInfo, started_ms: int) -> str:
    """The id of the group's parent run in ``experiment_id``, created by the first rank to ask."""
    assert run.group is not None
    key = group_key(run.group)
    created: str | None = None
    with group_lock(run):
        parents = _parents(client, experiment_id, key)
        if not parents:
            tags = {GROUP_TAG: run.group[:MAX_TAG_VALUE_LENGTH], GROUP_KEY_TAG: key,
                    GROUP_ROLE_TAG: "parent", "loggerhub.project": run.project}
            if run.world_size is not None:
                tags[WORLD_SIZE_TAG] = str(run.world_size)
            created = client.create_run(experiment_id, start_time=started_ms, tags=tags,
                                        run_name=run.group[:250]).info.run_id
            parents = _parents(client, experiment_id, key)
    # Oldest first: every process that sees two parents (no shared lock file) keeps the same one.
    parents.sort(key=lambda parent: (parent.info.start_time or 0, parent.info.run_id))
    chosen = parents[0].info.run_id if parents else created
    assert chosen is not None
    if created is not None and created != chosen:
        client.delete_run(created)
    return chosen


def reopen_parent(client: MlflowClient, parent_id: str) -> None:
    """A rank delivering again (a resume, a re-sync) makes its finished group run again."""
    if client.get_run(parent_id).info.status != RunStatus.to_string(RunStatus.RUNNING):
        client.update_run(parent_id, status="RUNNING")


def end_parent(client: MlflowClient, run: RunInfo, experiment_id: str, parent_id: str) -> None:
    """End the parent once every rank's run has ended: FAILED if a rank failed, else KILLED if a
    rank was killed, else FINISHED; its end time is the last rank's. Ranks not yet delivered
    (fewer children than ``world_size``) keep it running."""
    with group_lock(run):
        children = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                      max_results=10000)
        expected = run.world_size or len(children)
        ranks = {child.data.tags.get(RANK_TAG, child.info.run_id) for child in children}
        if len(ranks) < expected or any(child.info.status not in _TERMINATED for child in children):
            return
        statuses = {child.info.status for child in children}
        status = next((s for s in ("FAILED", "KILLED") if s in statuses), "FINISHED")
        ended = max((child.info.end_time or 0 for child in children), default=None)
        client.set_terminated(parent_id, status, end_time=ended or None)


def _parents(client: MlflowClient, experiment_id: str, key: str) -> list[Any]:
    return list(client.search_runs(
        [experiment_id],
        f"tags.`{GROUP_KEY_TAG}` = '{key}' and tags.`{GROUP_ROLE_TAG}` = 'parent'",
        max_results=100,
    ))
