"""Train a tiny GPT-2, built from its config, with the Hugging Face Trainer and log it to loggerhub.

::

    python examples/train_transformers.py
    LOGGERHUB_BACKENDS=tensorboard,mlflow python examples/train_transformers.py

Offline, on CPU, in seconds: no hub download. ``loggerhub show <run id>`` summarises the run.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

from loggerhub.integrations.transformers import LoggerhubCallback  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2))
    ids = torch.randint(0, 64, (64, 16))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="loggerhub-hf-"), num_train_epochs=2, per_device_train_batch_size=8,
        logging_steps=2, eval_strategy="epoch", save_strategy="epoch", report_to="none", use_cpu=True,
    )
    with LoggerhubCallback(project="examples", name="tiny-gpt2", log_checkpoints=True) as callback:
        trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:16], callbacks=[callback])
        trainer.train()
        print(f"run: {callback.run.dir if callback.run else 'ended'}")


if __name__ == "__main__":
    main()
