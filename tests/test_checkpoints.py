"""Resume only from checkpoints that load and that this run wrote: manifests, damage, tampering, e2e resume."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from lmm.config import compose
from lmm.pipeline import run_pipeline
from lmm.records import read_record
from lmm.training import checkpoints, stage
from lmm.training.checkpoints import MANIFEST, REJECTED, ManifestCallback, latest_checkpoint

LOG = "lmm.training.checkpoints"


def fake_checkpoint(ckpt_dir: Path, step: int, callback: ManifestCallback | None = None) -> Path:
    """A checkpoint as the Trainer leaves it (weights, optimizer, RNG, state), then the manifest callback."""
    folder = ckpt_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32) * step}, str(folder / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(64) * step}}}, folder / "optimizer.pt")
    torch.save({"python": step}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    (callback or ManifestCallback()).on_save(SimpleNamespace(output_dir=str(ckpt_dir), should_save=True),
                                             SimpleNamespace(global_step=step), None)
    return folder


def test_the_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    folder = fake_checkpoint(tmp_path, 2)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["step"] == 2 and set(manifest["files"]) == {"model.safetensors", "optimizer.pt",
                                                                "rng_state.pth", "trainer_state.json"}
    entry = manifest["files"]["optimizer.pt"]
    assert entry["size"] == (folder / "optimizer.pt").stat().st_size and len(entry["sha256"]) == 64
    assert (tmp_path / ".manifest-key").stat().st_mode & 0o777 == 0o600
    fake_checkpoint(tmp_path, 4)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert latest_checkpoint(tmp_path / "absent") is None


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def _resign_with_another_key(folder: Path) -> None:
    checkpoints.write_manifest(folder, b"another run's key", 4)


def _copy_from_another_run(folder: Path) -> None:
    other = fake_checkpoint(folder.parent.parent / "other-run", 4)
    shutil.rmtree(folder)
    shutil.copytree(other, folder)


def _edit_manifest_after_replacing_the_optimizer(folder: Path) -> None:
    torch.save({"state": "not ours"}, folder / "optimizer.pt")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["optimizer.pt"] = {"size": (folder / "optimizer.pt").stat().st_size,
                                         "sha256": checkpoints._sha256(folder / "optimizer.pt")}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _same_size_optimizer(folder: Path) -> None:
    path = folder / "optimizer.pt"
    path.write_bytes(bytes(len(path.read_bytes())))


DAMAGE = {
    # name: (what happens to checkpoint-4, the reason logged, whether it is merely incomplete (removed))
    "truncated weights": (lambda f: _truncate(f / "model.safetensors"), "model.safetensors is truncated", False),
    "weights header cut": (lambda f: _truncate(f / "model.safetensors", 5),
                           "model.safetensors has no valid safetensors header", False),
    "trainer state": (lambda f: (f / "trainer_state.json").write_text("{"), "trainer_state.json does not parse",
                      False),
    "optimizer missing": (lambda f: (f / "optimizer.pt").unlink(), "no optimizer state", False),
    "optimizer truncated": (lambda f: _truncate(f / "optimizer.pt"), "optimizer.pt has ", False),
    "optimizer replaced": (_same_size_optimizer, "optimizer.pt does not match its sha256", False),
    "file added": (lambda f: torch.save({}, f / "extra.pt"), "extra.pt is not in the manifest", False),
    "manifest missing": (lambda f: (f / MANIFEST).unlink(), f"no {MANIFEST}", True),
    "save cut short": (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json", True),
    "signed by another run": (_resign_with_another_key, "is not signed by this run", False),
    "copied from another run": (_copy_from_another_run, "is not signed by this run", False),
    "manifest edited": (_edit_manifest_after_replacing_the_optimizer, "is not signed by this run", False),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_resume_skips_a_checkpoint_that_would_not_load_saying_why(tmp_path, caplog, name):
    damage, reason, incomplete = DAMAGE[name]
    fake_checkpoint(tmp_path, 2)
    newest = fake_checkpoint(tmp_path, 4)
    damage(newest)
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    (warning,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not resuming")]
    assert warning.startswith(f"not resuming from {newest}: ") and reason in warning, warning
    assert not newest.exists()  # out of the Trainer's way: its step is saved afresh
    rejected = list((tmp_path / REJECTED).glob("checkpoint-4-*")) if (tmp_path / REJECTED).exists() else []
    assert len(rejected) == (0 if incomplete else 1)  # damaged or foreign ones are kept to look at
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"  # and the good one is kept


def test_no_checkpoint_loads_without_this_runs_key(tmp_path):
    fake_checkpoint(tmp_path, 2)
    (tmp_path / ".manifest-key").unlink()
    assert latest_checkpoint(tmp_path) is None


# ----------------------------------------------------------------------------- end to end


class Killed(RuntimeError):
    pass


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after saving step {self.step}")
        return control


@pytest.fixture
def trainer_callbacks(monkeypatch):
    """Stage runs get ManifestCallback (unless stage.py registers it already) and the callbacks listed here."""
    extra: list = []

    class WithCallbacks(stage.LmmTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not any(isinstance(cb, ManifestCallback) for cb in self.callback_handler.callbacks):
                self.add_callback(ManifestCallback())
            for callback in extra:
                self.add_callback(callback)

    monkeypatch.setattr(stage, "LmmTrainer", WithCallbacks)
    return extra


RUN = ["debug=fast", "tuning=lora", "tuning.rank=8", "trainer.max_steps=6", "trainer.save_steps=2",
       "trainer.logging_steps=1"]


def test_lora_resume_skips_a_damaged_newest_checkpoint_and_matches_an_uninterrupted_run(tmp_path, caplog,
                                                                                        trainer_callbacks):
    straight = read_record(run_pipeline(compose([f"paths.root={tmp_path / 'straight'}", *RUN])))["finetune"]

    cfg = compose([f"paths.root={tmp_path / 'killed'}", *RUN])
    run_pipeline(compose([f"paths.root={tmp_path / 'killed'}", *RUN, "stage=pretrain"]))  # stage 1 is not killed
    trainer_callbacks.append(KillAfterSave(4))
    with pytest.raises(Killed):
        run_pipeline(cfg)
    trainer_callbacks.clear()
    from lmm.launch.identity import run_dir

    ckpt_dir = run_dir(cfg) / "checkpoints"
    assert {p.name for p in ckpt_dir.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}
    _truncate(ckpt_dir / "checkpoint-4" / "adapter_model.safetensors")  # e.g. a disk that filled up

    with caplog.at_level(logging.WARNING, logger=LOG):
        resumed = read_record(run_pipeline(cfg))["finetune"]
    assert any(f"not resuming from {ckpt_dir / 'checkpoint-4'}: adapter_model.safetensors is truncated"
               in r.getMessage() for r in caplog.records)
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["steps"] == straight["steps"] == 6
    assert [e["step"] for e in resumed["losses"]] == [e["step"] for e in straight["losses"]]
    for a, b in zip(resumed["losses"], straight["losses"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]


def test_token_counters_add_on_the_device_and_are_read_once_per_log_line():
    from lmm.training.trainer import LmmTrainer

    trainer = LmmTrainer.__new__(LmmTrainer)  # the counters only: no model, no arguments
    trainer.tokens_seen, trainer.padded_tokens_seen = 5, 0  # as restored from an earlier segment's checkpoint
    for _ in range(3):
        trainer.count_tokens({"attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])})
    # Nothing was turned into a Python int at these steps (on a GPU that would wait for the device each time).
    assert isinstance(trainer._tokens_pending, torch.Tensor)
    assert (trainer.tokens_seen, trainer.padded_tokens_seen) == (5 + 3 * 3, 3 * 6)
    trainer.count_tokens({"input_ids": torch.ones(2, 3)})  # no mask: nothing to count
    assert trainer.tokens_seen == 14 and trainer._tokens_pending is None
