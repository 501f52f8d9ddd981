"""`pip install loggerhub[<tracker>]` really works: wheels of the core, the contract and the
plugins, installed into a fresh virtualenv, discover the plugins and deliver a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = sorted(p for p in (ROOT / "backends").iterdir() if (p / "pyproject.toml").exists())
PROJECTS = [ROOT / "hookspecs", ROOT, *BACKENDS]


@pytest.mark.slow
def test_extras_install_from_wheels_and_deliver(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    *map(str, PROJECTS)], check=True)
    built = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert built == sorted(["loggerhub", "loggerhub_comet", "loggerhub_hookspecs", "loggerhub_mlflow",
                            "loggerhub_neptune", "loggerhub_tensorboard", "loggerhub_wandb"])

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--find-links", str(wheels), "loggerhub[mlflow,tensorboard,wandb]==0.1.0"], check=True)

    listing = subprocess.run([str(env_dir / "bin" / "loggerhub"), "backends"], capture_output=True,
                             text=True, check=True).stdout
    for line in ("local", "mlflow", "tensorboard", "wandb"):
        assert any(row.startswith(line) and "ok (" in row for row in listing.splitlines()), listing
    assert "neptune" not in listing and "comet" not in listing  # not asked for, not installed

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import json, loggerhub
        from mlflow.tracking import MlflowClient
        from loggerhub_tensorboard.reader import read_logdir
        from loggerhub_wandb import reader as wandb_reader

        store = "sqlite:///" + {str(tmp_path / "mlflow.db")!r}
        with loggerhub.init(project="wheels", name="w", dir={str(tmp_path / "runs")!r},
                            backends=["mlflow", "tensorboard", "wandb"], config={{"lr": 0.1}},
                            options={{"mlflow": {{"tracking_uri": store}},
                                      "tensorboard": {{"logdir": {str(tmp_path / "tb")!r}}},
                                      "wandb": {{"mode": "offline", "dir": {str(tmp_path / "wb")!r}}}}},
                            drain_timeout=600) as run:  # three first deliveries, on a busy machine
            for step in range(5):
                run.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name("wheels")
        mlflow_run = client.search_runs([experiment.experiment_id])[0]
        history = [(m.step, m.value) for m in client.get_metric_history(mlflow_run.info.run_id, "loss")]
        tb = [(s.step, round(s.value, 6)) for s in read_logdir({str(tmp_path / "tb")!r}).scalars["loss"]]
        wb_dirs = wandb_reader.run_dirs({str(tmp_path / "wb" / "wandb")!r})
        wb = wandb_reader.merge([wandb_reader.read_run(p) for p in wb_dirs])
        wb_loss = [(row.values["loggerhub/step"], round(row.values["loss"], 6))
                   for row in wb.history if "loss" in row.values]
        print(json.dumps({{"mlflow": sorted(history), "status": mlflow_run.info.status,
                          "params": mlflow_run.data.params, "tensorboard": tb, "wandb": wb_loss,
                          "summary": run.summary}}))
    """))
    # wandb's cache, staging and settings folders default to the home directory.
    wandb_home = {f"WANDB_{name}_DIR": str(tmp_path / "wandb-home" / name.lower())
                  for name in ("CACHE", "DATA", "CONFIG")}
    out = subprocess.run([str(python), str(script)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, **wandb_home, "WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = [[step, round(1.0 / (step + 1), 6)] for step in range(5)]
    assert [[s, round(v, 6)] for s, v in result["mlflow"]] == expected
    assert [list(p) for p in result["tensorboard"]] == expected
    assert [list(p) for p in result["wandb"]] == expected
    assert result["status"] == "FINISHED" and result["params"] == {"lr": "0.1"}
    assert all(t["undelivered"] == 0 for t in result["summary"]["trackers"].values())
