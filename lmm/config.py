"""Typed schemas for every config group, registered in Hydra's ConfigStore."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from lmm import CONF_DIR
from lmm.launch.identity import sweep_problems
from lmm.plan.checkpointing import checkpointing_needed
from lmm.tuning import tuning_method

# `alpha: ${lmm.mul:${.rank},2}` keeps LoRA's alpha = 2 × rank when only the rank is swept.
if not OmegaConf.has_resolver("lmm.mul"):
    OmegaConf.register_new_resolver("lmm.mul", lambda a, b: a * b)


def _sweep_folder(name: str) -> str:
    """The sweep as a folder name for Hydra's own log folders, refused before Hydra creates anything."""
    found = sweep_problems(str(name))
    if found:
        raise ValueError(found[0])
    return str(name)


# train.yaml's hydra.run/sweep.dir: `sweep=../../escaped` must not create folders outside runs/.
if not OmegaConf.has_resolver("lmm.sweep_folder"):
    OmegaConf.register_new_resolver("lmm.sweep_folder", _sweep_folder)
# The paper's DeepSpeed choice: ZeRO-3 everywhere except QLoRA, which needs ZeRO-2.
if not OmegaConf.has_resolver("lmm.paper_zero_stage"):
    OmegaConf.register_new_resolver("lmm.paper_zero_stage", lambda method: tuning_method(method).paper_zero_stage)


def _checkpointing(*, _root_: DictConfig) -> bool:
    return checkpointing_needed(_root_)


# `trainer.gradient_checkpointing`'s default: on only when the planner predicts stage 2 would not fit without it.
if not OmegaConf.has_resolver("lmm.checkpointing"):
    OmegaConf.register_new_resolver("lmm.checkpointing", _checkpointing)


@dataclass
class StageRecipe:
    """Optimisation settings the paper used for one stage and method at one model size."""

    lr: float = MISSING
    global_batch_size: int = MISSING
    micro_batch_size: int = MISSING
    epochs: float = 1.0
    nodes: int = 1


@dataclass
class RecipeConfig:
    """The paper's recipe per model size; tuning presets and the stage-1 block read from it."""

    # Stage 1: lr 1e-4, no weight decay (paper); the batch size is not stated there (LLaVA used 256).
    # Micro-batch 8 divides 256 on 1, 2 or 4 nodes, since a stage=both job runs stage 1 on its own nodes.
    pretrain: StageRecipe = field(default_factory=lambda: StageRecipe(1e-4, 256, 8, 1.0, 1))
    # Stage 2 full fine-tuning: lr 2e-5, global batch 512 on 4 nodes × 8 A100-80G.
    full: StageRecipe = field(default_factory=lambda: StageRecipe(2e-5, 512, 4, 1.0, 4))
    # Stage 2 LoRA/QLoRA (and DoRA, which the paper lacks): lr 1e-4, global batch 64 on 1 node (33B) or 2 (65B).
    lora: StageRecipe = field(default_factory=lambda: StageRecipe(1e-4, 64, 4, 1.0, 1))


@dataclass
class ModelConfig:
    """The language model: a hub id or local folder, or a random-init size for CPU runs."""

    name: str = MISSING
    family: str = "llama"
    # Hub id or local folder of the checkpoint; null = build with random weights from the fields below.
    path: Optional[str] = None
    # True when no public checkpoint exists and the user must supply a local folder (the paper's Vicuna-65B).
    local_only: bool = False
    # The base LLM (hub id or local folder) that stage 0 instruction-tunes into this model when `path` is null
    # (65b: LLaMA-65B → the paper's own Vicuna-65B). Not part of stage-1/2 ids: they include the stage-0 id.
    base: Optional[str] = None
    # Tokenizer: null = the checkpoint's own; "tiny" = the small offline tokenizer; or a folder/tokenizer.json.
    tokenizer: Optional[str] = None
    template: str = "vicuna_v1"
    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_layers: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: Optional[int] = None
    vocab_size: int = 32000
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    # Published size in billions, for reports and checks (e.g. 33 for Vicuna-33B).
    nominal_params_b: float = MISSING
    recipe: RecipeConfig = field(default_factory=RecipeConfig)


@dataclass
class VisionConfig:
    """The CLIP vision tower (always frozen)."""

    name: str = MISSING
    path: Optional[str] = None  # hub id or folder; null = random init from the fields below
    image_size: int = MISSING
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    # Features from the layer before the last, CLS token dropped (LLaVA's choice).
    feature_layer: int = -2
    feature_select: str = "default"


@dataclass
class ProjectorConfig:
    """The vision-to-language projector."""

    name: str = MISSING
    type: str = "linear"  # linear | mlp2x_gelu


@dataclass
class TuningConfig:
    """How stage 2 trains the LLM: full fine-tuning or an adapter method (lmm.tuning), with its optimiser settings."""

    name: str = MISSING
    method: str = "full"  # a name in lmm.tuning.METHODS: full | lora | qlora | dora
    # Stage-2 optimisation; the presets take these from the model's recipe for the method.
    lr: float = MISSING
    global_batch_size: int = MISSING
    micro_batch_size: int = MISSING
    epochs: float = MISSING
    nodes: int = MISSING
    rank: int = 0
    alpha: float = 0.0
    dropout: float = 0.05
    # Regex over module paths: LoRA goes on the language model's linear layers only, never on CLIP.
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    # QLoRA: base weights in 4-bit NF4 with double quantisation.
    bits: int = 16
    quant_type: str = "nf4"
    double_quant: bool = True
    # Also export a merged (LoRA folded into the base) Hugging Face folder at the end of stage 2.
    merge_on_save: bool = False


@dataclass
class DataConfig:
    """A training dataset: LLaVA-format JSON with images, optionally mixed with text-only ShareGPT."""

    name: str = MISSING
    kind: str = "llava"  # llava | synthetic
    path: Optional[str] = None  # LLaVA-format JSON
    image_folder: Optional[str] = None
    sharegpt_path: Optional[str] = None
    # Number of ShareGPT conversations added = sharegpt_ratio × number of LLaVA samples (0 = no mixing).
    sharegpt_ratio: float = 0.0
    max_length: int = 2048
    image_aspect: str = "pad"  # pad (to square with the processor's mean colour) | resize
    max_bad_fraction: float = 0.01
    group_by_length: bool = True
    # DataLoader worker processes per rank: images are decoded and preprocessed while the GPU computes (0 = in
    # the training process; synthetic data uses 0). Not part of the run's identity.
    num_workers: int = 4
    # For the pre-flight planner (no data is read): dataset size and mean text tokens per sample.
    num_samples: Optional[int] = None
    mean_text_tokens: Optional[float] = None
    # Synthetic data only: generated on first use under paths.data_dir.
    synthetic_seed: int = 0
    synthetic_num_train: int = 0
    synthetic_num_eval: int = 0


@dataclass
class StageConfig:
    """Which stages this run executes and where stage 2 finds its stage-1 projector."""

    name: str = MISSING  # pretrain | finetune | both | stage0 (only the LLM's stage 0: the launcher's stage-0 job)
    # An explicit stage-1 projector (file or run folder); null = the stage-1 run with the matching id.
    projector_path: Optional[str] = None


@dataclass
class Stage0Config:
    """Stage 0: language-only instruction tuning of `model.base` on ShareGPT into the chat LLM stages 1-2 start from.

    Runs only when `model.path` is null and `model.base` is set (conf/stage0/: FastChat's Vicuna recipe).
    Full fine-tuning of the plain causal LM (no vision tower), loss on assistant turns only, `model.template`.
    """

    name: str = MISSING
    lr: float = MISSING
    global_batch_size: int = MISSING
    micro_batch_size: int = MISSING
    epochs: float = MISSING
    nodes: int = 1  # nodes of the stage-0 job (its own job on SLURM; an in-process run uses the job's nodes)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    # How it runs, not what it computes (not part of the stage-0 id):
    zero_stage: int = 3
    gradient_checkpointing: bool = True
    # A ShareGPT-format JSON (`python -m lmm.data.sharegpt` writes one); max_length is FastChat's model_max_length.
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class PretrainConfig:
    """Stage-1 optimisation (projector only), taken from the model's recipe."""

    lr: float = II("model.recipe.pretrain.lr")
    global_batch_size: int = II("model.recipe.pretrain.global_batch_size")
    micro_batch_size: int = II("model.recipe.pretrain.micro_batch_size")
    epochs: float = II("model.recipe.pretrain.epochs")
    nodes: int = II("model.recipe.pretrain.nodes")
    # Stage 1's own ZeRO stage (it trains only the projector, whatever the stage-2 method): null = the
    # run's deepspeed.stage, raised to ZeRO-3 when the planner predicts that would not fit (65B: the bf16
    # LLM on every GPU under ZeRO-2 needs ~136 GB). Not part of the stage-1 identity.
    zero_stage: Optional[int] = None


@dataclass
class TrainerConfig:
    """Training-loop settings shared by both stages."""

    warmup_ratio: float = 0.03
    lr_scheduler: str = "linear"  # linear warm-up then this decay (the paper: linear)
    weight_decay: float = 0.0
    max_steps: int = -1  # > 0 caps every stage at this many optimiser steps (debugging, tests)
    # Separate learning rate for the projector in stage 2; null = the stage's lr.
    projector_lr: Optional[float] = None
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    # true | false; the default resolves to true only when the planner predicts stage 2 would not fit in
    # cluster.gpu_mem_gb without it (or the memory is unknown): recomputation costs ~1/3 more compute.
    gradient_checkpointing: bool = II("lmm.checkpointing:")
    save_steps: int = 500
    save_total_limit: Optional[int] = 2  # checkpoints kept; 0 or null = all
    logging_steps: int = 10


@dataclass
class SpeedConfig:
    """How fast a run goes on GPUs, never what it computes: none of it is part of the run's identity."""

    # Attention kernel: auto (flash_attention_2 when the flash-attn package is installed and the run is bf16
    # on CUDA, else sdpa) | sdpa (PyTorch's fused kernels, transformers' default) | flash_attention_2 | eager.
    attn_implementation: str = "auto"
    # TF32 tensor cores for fp32 matmuls on Ampere and newer (bf16 runs only touch the few fp32 ones).
    tf32: bool = True
    # One fused CUDA kernel for AdamW's update of all parameters (optim="adamw_torch_fused"); CPU: plain AdamW.
    fused_adamw: bool = True
    # torch.compile the model (Trainer's torch_compile): a minute or more of compilation per process before
    # the first step; measured by `python -m bench.throughput --gpu` before turning it on for a sweep.
    torch_compile: bool = False
    # Page-locked host memory for batches, so host-to-GPU copies are asynchronous (data.num_workers sets
    # the loader's worker processes).
    pin_memory: bool = True


@dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO settings; stage 0 = plain data parallel without DeepSpeed."""

    name: str = MISSING
    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False


@dataclass
class ClusterConfig:
    """Where runs execute: GPUs per node and their memory, and SLURM account settings."""

    name: str = MISSING
    gpus_per_node: int = 1
    gpu_type: str = "cpu"
    gpu_mem_gb: float = 0.0
    cpus_per_task: int = 1
    mem_gb_per_node: int = 0
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    # A gres request for every job (e.g. "gpu:a100:8"); null = --gpus-per-node=<gpus_per_node>.
    gres: Optional[str] = None
    timeout_min: int = 60
    usd_per_gpu_hour_per_node: float = 13.63


@dataclass
class LoggerConfig:
    """Experiment tracking: none or Weights & Biases."""

    name: str = MISSING
    project: Optional[str] = None
    entity: Optional[str] = None
    mode: str = "online"  # online | offline


@dataclass
class BenchmarkPaths:
    """Where each benchmark's published files live (LLaVA's playground/data/eval layout by default)."""

    root: str = "${paths.data_dir}/eval"
    # questions.jsonl, context.jsonl (captions), answers_gpt4.jsonl, images/
    llava_bench: str = "${.root}/llava-bench-in-the-wild"
    # qa90_questions.jsonl, qa90_gpt4_answer.jsonl, caps_boxes_coco2014_val_80.jsonl, images/ (COCO val2014)
    llava_bench_coco: str = "${.root}/llava-bench-coco"
    # The judge's rule prompts per category (LLaVA's llava/eval/table/rule.json).
    llava_bench_rules: str = "${.root}/table/rule.json"
    # mm-vet.json (id -> imagename, question, answer, capability), images/
    mmvet: str = "${.root}/mm-vet"
    # MM-Vet's few-shot grader prompt, as a text file.
    mmvet_grader_prompt: str = "${.mmvet}/grader_prompt.txt"
    # The MMBench TSV (base64 images, one row per circular pass).
    mmbench: str = "${.root}/mmbench/mmbench_dev_20230712.tsv"
    # FastChat's eval table: question.jsonl, prompt.jsonl, reviewer.jsonl, answer/
    vicuna80: str = "${.root}/vicuna80"
    vicuna80_reference: str = "${.vicuna80}/answer/answer_gpt35.jsonl"
    # Hendrycks' layout: dev/<subject>_dev.csv (the 5 shots), test/<subject>_test.csv
    mmlu: str = "${.root}/mmlu"
    # eval.json + images/ of a synthetic data set; null = the run's own synthetic data (`data`).
    synthetic: Optional[str] = None


@dataclass
class JudgeConfig:
    """The LLM judge: any OpenAI-compatible chat-completions server."""

    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    # One judge model for every benchmark; null = `models` (the judges of the published numbers).
    model: Optional[str] = None
    models: dict[str, str] = field(default_factory=lambda: {
        "llava_bench": "gpt-4-0314", "llava_bench_coco": "gpt-4-0314", "mmvet": "gpt-4-0613", "vicuna80": "gpt-4",
    })
    # Judge runs averaged per benchmark (the paper averages 3 LLaVA-Bench runs); 1 where not listed.
    num_runs: dict[str, int] = field(default_factory=lambda: {
        "llava_bench": 3, "llava_bench_coco": 3, "mmvet": 3, "vicuna80": 1,
    })
    cache_dir: str = "${paths.cache_dir}/judge"
    max_workers: int = 8
    max_retries: int = 6
    timeout_s: float = 120.0
    # Judge replies (item × judge run) that may fail to parse as a score while a score is still published
    # (left out of it, the count shown beside it); above this the benchmark is incomplete and the command
    # fails naming the items. 0: every reply must parse.
    max_parse_failures: int = 0


@dataclass
class EvalConfig:
    """Which benchmarks to evaluate after training, and how to generate."""

    name: str = MISSING
    benchmarks: list[str] = field(default_factory=list)
    num_beams: int = 1
    max_new_tokens: int = 1024
    batch_size: int = 8  # prompts per generate() call, left-padded (answers do not depend on it)
    # Where the evaluated model goes on GPUs: auto = accelerate's device_map="auto", its layers spread over
    # every visible GPU within max_memory_per_gpu_gb (a 65B model in bf16 needs two 80 GB GPUs); none = whole
    # on GPU 0. A machine without GPUs loads it whole on the CPU either way.
    device_map: str = "auto"
    # GiB of each GPU the weights may take; the rest holds activations and the beams' KV cache. null = 85 %.
    max_memory_per_gpu_gb: Optional[float] = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    paths: BenchmarkPaths = field(default_factory=BenchmarkPaths)


@dataclass
class PathsConfig:
    """Where runs, data and caches live; user-supplied checkpoint folders."""

    root: str = "."
    runs_dir: str = MISSING
    data_dir: str = MISSING
    cache_dir: str = MISSING
    # The paper's own Vicuna-65B (not public): set LMM_VICUNA_65B or paths.vicuna_65b.
    vicuna_65b: Optional[str] = None


@dataclass
class PlanConfig:
    """The pre-flight planner: memory fit and time/cost prediction before submission."""

    # Submit runs predicted to run out of memory anyway.
    force: bool = False
    format: str = "table"  # table | json
    # Achieved FLOP/s per GPU (the time model's one efficiency constant), in TFLOP/s; null = calibrated.
    achieved_tflops_per_gpu: Optional[float] = None


@dataclass
class RunConfig:
    """The whole composed config of one run."""

    model: ModelConfig = MISSING
    vision: VisionConfig = MISSING
    projector: ProjectorConfig = MISSING
    tuning: TuningConfig = MISSING
    data: DataConfig = MISSING  # stage 2
    pretrain_data: DataConfig = MISSING  # stage 1
    stage: StageConfig = MISSING
    stage0: Stage0Config = MISSING
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    deepspeed: DeepSpeedConfig = MISSING
    cluster: ClusterConfig = MISSING
    logger: LoggerConfig = MISSING
    eval: EvalConfig = MISSING
    paths: PathsConfig = MISSING
    plan: PlanConfig = field(default_factory=PlanConfig)
    # cpu (train.yaml's defaults) or paper (brought by a paper-size model: conf/paper_setting.yaml).
    setting: str = "cpu"
    sweep: str = "default"
    seed: int = 42
    dry_run: bool = False
    # What a job does with its run: `all` trains (if not done) then evaluates `eval.benchmarks`; the
    # SLURM launcher splits that into a `train` job and an `eval` job sized for inference (afterok).
    task: str = "all"


def register_configs() -> None:
    """Register the run schema (`conf/train.yaml` lists it first so every group is typed and checked).

    lmm's launchers (`hydra/launcher=lmm_slurm`, `submitit`) register themselves: Hydra's plugin discovery
    imports every module of the `hydra_plugins` namespace package before it composes a config."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


register_configs()




def compose(overrides: Sequence[str] = (), config_name: str = "train", return_hydra_config: bool = False
            ) -> DictConfig:
    """Compose a run config outside a Hydra app (tests, tools), exactly as `python -m lmm.train` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=return_hydra_config)
