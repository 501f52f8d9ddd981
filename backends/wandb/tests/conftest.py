"""W&B in the tests: offline, silent, and with every folder wandb writes to under the test's tmp."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loggerhub_wandb.testing import SANDBOX_VARIABLES, sandbox_environment


@pytest.fixture(autouse=True, scope="session")
def wandb_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("wandb-home")
    patch = pytest.MonkeyPatch()
    for variable in SANDBOX_VARIABLES:
        patch.delenv(variable, raising=False)
    for variable, value in sandbox_environment(root).items():
        patch.setenv(variable, value)
    yield
    patch.undo()
