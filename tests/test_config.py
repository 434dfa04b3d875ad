"""Config tree: every option and experiment composes and validates; invalid combinations fail clearly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmm.config import CONF_DIR, compose
from lmm.launch.identity import run_id, stage1_id
from lmm.tuning import METHOD_NAMES
from lmm.validate import ConfigError, validate

REPO = CONF_DIR.parent
GROUPS = ["model", "vision", "projector", "tuning", "data", "stage", "stage0", "deepspeed", "cluster", "logger",
          "eval", "paths", "debug"]
# Options that only make sense with companions (an 8-GPU cluster needs a paper-sized batch).
COMPANIONS = {("cluster", "a100_80g"): ["model=33b"], ("deepspeed", "paper"): ["tuning=lora"],
              ("stage", "stage0"): ["model=65b", "paths.vicuna_65b=null"]}  # stage 0 needs a model.base


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def experiments(prefix: str = "table") -> list[str]:
    """The paper's experiment files (table*/); `cpu/` holds CPU-scale ones."""
    root = CONF_DIR / "experiment"
    names = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    return [n for n in names if n.startswith(prefix)]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option):
    cfg = compose([f"{group}={option}", *COMPANIONS.get((group, option), [])])
    validate(cfg)
    if group in ("model", "vision", "tuning", "data", "deepspeed", "cluster", "logger", "eval", "projector"):
        assert cfg[group].name == option


def test_groups_have_the_required_options():
    assert {"7b", "13b", "33b", "65b", "70b", "tiny_s", "tiny_m", "tiny_l"} <= set(options("model"))
    assert {"clip_l14_224", "clip_l14_336"} <= set(options("vision"))
    assert set(options("tuning")) == set(METHOD_NAMES)  # every registered method has its preset
    assert {"linear", "mlp2x_gelu"} <= set(options("projector"))
    assert {"laion_cc_sbu_558k", "llava_80k", "llava_80k_sharegpt", "synthetic"} <= set(options("data"))
    assert {"zero2", "zero3", "none"} <= set(options("deepspeed"))
    assert {"local", "slurm"} <= set(options("hydra/launcher"))  # `submitit`: a ConfigStore entry
    launcher = compose(["hydra/launcher=submitit"], return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("LmmLocalLauncher")


@pytest.mark.parametrize("name", experiments())
def test_every_experiment_composes_and_validates(name):
    cfg = compose([f"experiment={name}"])
    validate(cfg)
    assert cfg.sweep == name.split("/")[0]
    assert cfg.cluster.gpus_per_node == 8 and cfg.pretrain_data.name == "laion_cc_sbu_558k"
    # The paper's DeepSpeed choice per method.
    assert cfg.deepspeed.stage == (2 if cfg.tuning.method == "qlora" else 3)


@pytest.mark.parametrize("name", experiments("cpu/"))
def test_cpu_experiments_compose_and_validate(name):
    cfg = compose([f"experiment={name}"])
    validate(cfg)
    assert cfg.model.name.startswith("tiny") and cfg.cluster.gpu_type == "cpu"


def test_experiments_cover_every_table():
    tables = {e.split("/")[0] for e in experiments()}
    assert tables == {"table1", "table2", "table3", "table4", "table5"}
    # Table 4 has nine columns.
    assert len([e for e in experiments() if e.startswith("table4/") and "alpha16" not in e]) == 9


def test_paper_values_in_presets():
    c = compose(["experiment=table4/33b_lora64"])
    assert (c.model.hidden_size, c.vision.image_size, c.tuning.rank, c.tuning.alpha) == (6656, 336, 64, 128)
    assert (c.tuning.lr, c.tuning.global_batch_size, c.tuning.nodes) == (1e-4, 64, 1)
    assert c.data.max_length == 2048 and c.trainer.warmup_ratio == 0.03
    c = compose(["experiment=table4/65b_lora64"])
    assert c.tuning.nodes == 2 and c.model.hidden_size == 8192
    c = compose(["experiment=table4/65b_full"])
    assert (c.tuning.lr, c.tuning.global_batch_size, c.tuning.nodes, c.deepspeed.stage) == (2e-5, 512, 4, 3)
    c = compose(["experiment=table4/33b_qlora64"])
    assert (c.tuning.bits, c.tuning.quant_type, c.tuning.double_quant, c.deepspeed.stage) == (4, "nf4", True, 2)
    # Sweeping the rank alone keeps alpha = 2 × rank.
    assert compose(["tuning=lora", "tuning.rank=8"]).tuning.alpha == 16


def _error(overrides: list[str], **kw) -> str:
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg, **kw)
    return str(info.value)


def test_qlora_with_zero3_is_rejected():
    msg = _error(["tuning=qlora", "deepspeed=zero3"])
    assert "tuning.method = qlora" in msg and "deepspeed.stage = 3" in msg and "deepspeed=zero2" in msg


@pytest.mark.parametrize("field", ["rank", "alpha"])
@pytest.mark.parametrize("value", [0, -8])
def test_lora_rank_and_alpha_must_be_positive(field, value):
    msg = _error(["tuning=lora", f"tuning.{field}={value}"])
    assert f"tuning.{field} = {value}" in msg and "must be > 0" in msg


def test_image_size_is_the_towers_alone():
    # Images are preprocessed to the tower's size (vision.image_size): the data has no size of its own to set.
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Could not override 'data.image_size'"):
        compose(["vision=clip_l14_336", "data.image_size=224"])


@pytest.mark.parametrize("override", ["tuning.lr=0", "tuning.lr=-1e-4", "pretrain.lr=0"])
def test_learning_rate_must_be_positive(override):
    field = override.split("=")[0]
    assert f"{field} = " in _error([override]) and "must be > 0" in _error([override])


def test_global_batch_must_divide_into_micro_batches_times_gpus():
    msg = _error(["model=33b", "cluster=a100_80g", "tuning.global_batch_size=100"])
    assert "tuning.global_batch_size = 100" in msg and "tuning.micro_batch_size (4)" in msg
    assert "world size (32" in msg and "multiple of 128" in msg


def test_finetune_without_a_stage1_source_is_rejected():
    msg = _error(["stage=finetune"], stage1_exists=False)
    assert "stage.name = finetune" in msg and "stage.projector_path" in msg
    assert "python -m lmm.train stage=pretrain model=tiny_s vision=tiny_32" in msg
    # With an explicit projector, or when the stage-1 run exists, it is fine.
    validate(compose(["stage=finetune", "stage.projector_path=/some/projector"]), stage1_exists=False)
    validate(compose(["stage=finetune"]), stage1_exists=True)


def test_every_problem_is_reported_at_once():
    msg = _error(["tuning=qlora", "deepspeed=zero3", "tuning.rank=0", "tuning.lr=0"])
    # alpha follows rank (2 × 0), so it is reported too.
    assert msg.count("\n  - ") == 4
    for field in ("tuning.rank = 0", "tuning.alpha = 0", "deepspeed.stage = 3", "tuning.lr = 0"):
        assert field in msg


def test_unknown_group_option_fails_in_hydra():
    from hydra.errors import MissingConfigException

    for override in ["model=99b", "vision=clip_h14", "tuning=vera"]:
        with pytest.raises(MissingConfigException):
            compose([override])


def test_run_id_is_deterministic_and_sensitive():
    a = run_id(compose(["model=33b", "tuning=lora"]))
    assert a == run_id(compose(["tuning=lora", "model=33b"]))
    assert re.fullmatch(r"33b-clip_l14_336-linear-lora64-llava_80k-[0-9a-f]{8}", a)  # the paper setting
    assert a != run_id(compose(["model=33b", "tuning=lora", "tuning.rank=8"]))
    # Where data lives, how a run is logged or evaluated, and the dry-run flag do not change identity.
    assert a == run_id(compose(["model=33b", "tuning=lora", "paths.data_dir=/elsewhere", "logger=wandb",
                                "eval=llava_bench", "eval.num_beams=5", "dry_run=true"]))
    # Stage 1 is shared by every tuning method.
    assert stage1_id(compose(["tuning=lora"])) == stage1_id(compose(["tuning=full"]))
    assert stage1_id(compose(["experiment=table4/33b_qlora64"])) == stage1_id(compose(["experiment=table4/33b_full"]))
    assert stage1_id(compose(["seed=1"])) != stage1_id(compose([]))


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmm.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_multirun_dry_run_prints_four_plans(tmp_path):
    args = ["-m", "model=33b,65b", "tuning=lora,full", "dry_run=true", f"paths.root={tmp_path}"]
    first = _train(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ids = re.findall(r"^run (\S+)$", first.stdout, flags=re.M)
    assert len(ids) == 4 and len(set(ids)) == 4
    assert {i.split("-")[0] for i in ids} == {"33b", "65b"}
    again = _train(*args, cwd=tmp_path)
    assert re.findall(r"^run (\S+)$", again.stdout, flags=re.M) == ids
    assert not (tmp_path / "runs" / "default" / ids[0]).exists()  # a dry run creates no run folder


def test_dry_run_plan_shows_the_run(tmp_path):
    out = _train("experiment=table4/33b_full", "dry_run=true", f"paths.root={tmp_path}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for text in ["run 33b-clip_l14_336-linear-full-llava_80k-", "ZeRO-3", "projector + LLM (CLIP frozen)",
                 "micro 4 × accumulation 4 × world 32 = global 512", f"{tmp_path}/runs/table4/"]:
        assert text in out.stdout


def test_invalid_config_fails_before_anything_runs(tmp_path):
    out = _train("tuning=qlora", "deepspeed=zero3", f"paths.root={tmp_path}", cwd=tmp_path)
    assert out.returncode != 0 and "deepspeed=zero2" in out.stderr
    runs = tmp_path / "runs" / "default"
    assert not runs.exists() or [p.name for p in runs.iterdir()] == [".hydra"]  # only Hydra's own log


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = _train("--cfg", "job", "model=70b", cwd=tmp_path)
    assert out.returncode == 0 and "hidden_size: 8192" in out.stdout and "template: llama_2" in out.stdout


# ----------------------------------------------------------------------------- issue 11: bad input, clear errors

# Each invalid config and a text its error must contain (the field, and where useful the fix).
NEWLY_REJECTED = [
    (["trainer.save_steps=0"], "trainer.save_steps = 0 must be >= 1"),
    (["trainer.max_steps=0"], "trainer.max_steps = 0 must be -1 (train for the epochs) or >= 1"),
    (["trainer.precision=fp8"], "trainer.precision = 'fp8' must be one of auto, bf16, fp32"),
    (["+foo=1"], "foo is not a setting of the run config"),
    (["sweep=../../escaped"], "sweep = '../../escaped' must be a plain name"),
    (["data.max_bad_fraction=-1"], "data.max_bad_fraction = -1.0 must be in [0, 1]"),
    (["trainer.save_total_limit=-3"], "trainer.save_total_limit = -3 must be >= 0, or null"),
    (["data=llava_80k", "data.path=/nonexistent/llava.json", "data.image_folder=/"],
     "data.path = /nonexistent/llava.json: missing"),
    (["trainer.lr_scheduler=bogus"], "trainer.lr_scheduler = 'bogus' must be one of linear, cosine"),
    (["data.max_length=0"], "data.max_length = 0 must be >= 1"),
    (["cluster.gpus_per_node=-1"], "cluster.gpus_per_node = -1 must be >= 1"),
    (["model.num_heads=5"], "model.num_heads = 5 does not divide model.hidden_size = 64"),
    (["logger.mode=bogus"], "logger.mode = 'bogus' must be one of online, offline, disabled"),
    (["trainer.logging_steps=0"], "trainer.logging_steps = 0 must be >= 1"),
    (["eval.benchmarks=[bogus]"], "eval.benchmarks has unknown 'bogus': the benchmarks are llava_bench"),
    (["cluster.gpus_per_node=0"], "cluster.gpus_per_node = 0 must be >= 1"),
]


@pytest.mark.parametrize("overrides,expected", NEWLY_REJECTED, ids=[" ".join(o) for o, _ in NEWLY_REJECTED])
def test_invalid_values_are_rejected_before_anything_is_built(tmp_path, overrides, expected):
    msg = _error([f"paths.root={tmp_path}", *overrides], check_files=True)
    assert expected in msg
    assert msg.count("\n  - ") == 1  # exactly this problem, no follow-up error (e.g. no ZeroDivisionError)


def test_missing_data_files_are_problems_for_real_runs_only(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "data=llava_80k_sharegpt", "stage=finetune",
                   "stage.projector_path=/nonexistent/projector.safetensors", "eval=paper"])
    validate(cfg)  # a dry run (and tests of the paper's configs) look at configs, not at data
    msg = _error([f"paths.root={tmp_path}", "data=llava_80k_sharegpt", "stage=finetune",
                  "stage.projector_path=/nonexistent/projector.safetensors", "eval=paper"], check_files=True)
    for field in ("data.path", "data.image_folder", "data.sharegpt_path", "stage.projector_path",
                  "eval.paths.llava_bench ", "eval.paths.llava_bench_rules", "eval.paths.mmvet ",
                  "eval.paths.mmvet_grader_prompt", "eval.paths.mmbench", "eval.paths.vicuna80 ",
                  "eval.paths.vicuna80_reference", "eval.paths.mmlu"):
        assert f"\n  - {field}" in msg, field
    # Stage 1's data is not read when stage 1 exists; synthetic data is generated on first use.
    validate(compose([f"paths.root={tmp_path}", "data@pretrain_data=laion_cc_sbu_558k"]), stage1_exists=True,
             check_files=True)
    assert "pretrain_data.path" in _error([f"paths.root={tmp_path}", "data@pretrain_data=laion_cc_sbu_558k"],
                                          check_files=True)


@pytest.mark.parametrize("overrides,expected", [
    (["sweep=stage1"], "sweep = 'stage1' is reserved"),
    (["sweep=stage2"], "sweep = 'stage2' is reserved"),
    (["sweep=/abs"], "must be a plain name"),
    (["sweep=.hidden"], "must be a plain name"),
    (["+trainer.sve_steps=5"], "trainer.sve_steps is not a setting of the `trainer` section"),
    (["+model.recipe.full.lrr=1"], "model.recipe.full.lrr is not a setting of the `model.recipe.full` section"),
    (["model=33b", "model.num_kv_heads=5"], "model.num_kv_heads = 5 must be >= 1 and divide model.num_heads = 52"),
    (["trainer.lr_scheduler=cosine_with_min_lr"], "trainer.lr_scheduler = 'cosine_with_min_lr' must be one of"),
    (["seed=-1"], "seed = -1 must be in [0, 2^32)"),
    (["eval.judge.max_parse_failures=-1"], "eval.judge.max_parse_failures = -1 must be >= 0"),
    (["pretrain_data.max_bad_fraction=1.5"], "pretrain_data.max_bad_fraction = 1.5 must be in [0, 1]"),
])
def test_more_invalid_values_name_their_field(overrides, expected):
    assert expected in _error(overrides)


def test_valid_edge_values_pass():
    validate(compose(["trainer.save_total_limit=null", "trainer.max_steps=-1", "data.max_bad_fraction=0",
                      "sweep=table4.v2-rerun_1", "+run=/some/run", "logger.mode=offline",
                      "+eval.judge.models.extra=gpt-4", "trainer.lr_scheduler=cosine"]))


def test_lr_scheduler_choices_follow_transformers():
    from transformers.trainer_utils import SchedulerType

    from lmm.validate import LR_SCHEDULERS

    needs_more = {"cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "reduce_lr_on_plateau",
                  "greedy"}  # lr_scheduler_kwargs or an evaluation metric, which our TrainingArguments do not set
    assert set(LR_SCHEDULERS) | needs_more >= {s.value for s in SchedulerType}
    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}


def test_stage1_command_reproduces_the_stage1_run(tmp_path):
    import shlex

    cfg = compose([f"paths.root={tmp_path}", "stage=finetune", "debug=fast", "trainer.max_steps=7",
                   "pretrain.lr=3e-4", "pretrain_data.synthetic_num_train=32", "tuning=lora"])
    command = stage1_command_of(_error([f"paths.root={tmp_path}", "stage=finetune", "debug=fast",
                                        "trainer.max_steps=7", "pretrain.lr=3e-4",
                                        "pretrain_data.synthetic_num_train=32", "tuning=lora"], stage1_exists=False))
    args = shlex.split(command)
    assert args[:4] == ["python", "-m", "lmm.train", "stage=pretrain"] and f"paths.root={tmp_path}" in args
    assert {"trainer.max_steps=7", "pretrain.lr=0.0003", "pretrain_data.synthetic_num_train=32"} <= set(args)
    again = compose(args[3:])
    assert stage1_id(again) == stage1_id(cfg) and str(run_id(again)) == stage1_id(cfg)


def stage1_command_of(message: str) -> str:
    return next(line.strip() for line in message.splitlines() if line.strip().startswith("python -m lmm.train"))


def test_every_problem_is_reported_at_once_even_in_a_dry_run(tmp_path):
    out = _train("trainer.save_steps=0", "trainer.precision=fp8", "+foo=1", "cluster.gpus_per_node=0",
                 "eval.benchmarks=[bogus]", "logger.mode=bogus", "dry_run=true", f"paths.root={tmp_path}",
                 cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr.split("Invalid config")[0][-200:]
    for field in ("trainer.save_steps = 0", "trainer.precision = 'fp8'", "foo is not a setting",
                  "cluster.gpus_per_node = 0", "eval.benchmarks has unknown 'bogus'", "logger.mode = 'bogus'"):
        assert field in out.stderr, field
    assert "ZeroDivisionError" not in out.stderr
    assert not (tmp_path / "runs" / "stage1").exists() and not (tmp_path / "runs" / "stage2").exists()


def test_following_the_printed_stage1_command_ends_the_error(tmp_path):
    """`stage=finetune` without stage 1 prints a command; run exactly that, and the same finetune command passes."""
    import shlex

    finetune = ["stage=finetune", "debug=fast", "trainer.max_steps=2", f"paths.root={tmp_path}"]
    first = _train(*finetune, "dry_run=true", cwd=tmp_path)
    assert first.returncode != 0 and "no stage-1 projector" in first.stderr
    command = stage1_command_of(first.stderr)
    args = shlex.split(command)
    assert {"debug=fast", "trainer.max_steps=2", f"paths.root={tmp_path}"} <= set(args)
    assert "dry_run=true" not in args and "stage=finetune" not in args
    made = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    again = _train(*finetune, "dry_run=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]


def test_an_escaping_sweep_name_creates_no_folder_anywhere(tmp_path):
    """Hydra makes its log folder from the sweep name before the app runs: the name is refused there too."""
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    out = _train("sweep=../../escaped", f"paths.root={inner}", cwd=inner)
    assert out.returncode != 0 and "sweep = '../../escaped' must be a plain name" in out.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b"]
