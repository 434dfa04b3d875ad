"""`python -m lmm.prepare` against a local Hub stand-in: fetch, unpack, lay out, resume, verify, pre-flight, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import prepare_world
import pytest
from hub_standin import Repo, StandIn

from lmm.prepare import PrepareError, hub, urls
from lmm.prepare.catalog import CATALOG
from lmm.prepare.data import prepare_entry
from lmm.prepare.verify import verify_entry

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture
def standin():
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture
def world(standin):
    return prepare_world.build(standin)


@pytest.fixture
def catalog(standin, world):
    return prepare_world.catalog(standin, world)


@pytest.fixture
def online(standin, tmp_path, monkeypatch):
    """huggingface_hub pointed at the stand-in, online, with an empty cache and no token (conftest sets offline)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", standin.base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(urls, "RETRY_WAIT_S", (0.05,) * 5)
    return tmp_path


def data_dir(tmp_path: Path) -> list[str]:
    """Data and caches (verify's image-check cache) in the test's folder."""
    return [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}"]


def prepare(catalog, names, tmp_path, **kwargs):
    return [prepare_entry(catalog[n], data_dir(tmp_path), progress=False, **kwargs) for n in names]


# ------------------------------------------------------------------------------------------- layout, idempotence
def test_every_entry_lands_where_the_configs_read_it(catalog, standin, online, tmp_path):
    from lmm.config import compose
    from lmm.eval.benchmarks import EvalContext, get_benchmark
    from lmm.eval.benchmarks.mmlu import load_subjects
    from lmm.prepare import missing_files
    from lmm.validate import problems

    results = prepare(catalog, list(catalog), tmp_path)
    assert [r.status for r in results] == ["prepared"] * len(catalog)

    # The run's own checks find every data and benchmark file (stage 1, stage 2 with ShareGPT, all benchmarks).
    cfg = compose(["data=llava_80k_sharegpt", "data@pretrain_data=laion_cc_sbu_558k", "eval=paper",
                   "eval.benchmarks=[llava_bench,llava_bench_coco,mmvet,mmbench,vicuna80,mmlu]", *data_dir(tmp_path)])
    assert problems(cfg, check_files=True) == []
    assert missing_files(cfg) == []
    # ... and each benchmark loads its items, every image present.
    subjects = load_subjects(cfg.eval.paths.mmlu)  # MMLU is scored by likelihood: no items to generate for
    assert {s: (len(d), len(t)) for s, (d, t) in subjects.items()} == {"astronomy": (5, 3), "virology": (5, 3)}
    for name in [b for b in cfg.eval.benchmarks if b != "mmlu"]:
        items = get_benchmark(name).load(EvalContext(cfg, tmp_path / "run"))
        assert items, name
        for item in items:  # every image is there and decodes (MMBench's are inline)
            image = item.materialise_image()
            if isinstance(image, (str, Path)):
                from PIL import Image

                with Image.open(image) as opened:
                    opened.load()
    data = tmp_path / "data"
    # MM-Vet's grader prompt is the evaluator's `prompt` string, byte for byte (its trailing newline included).
    assert (data / "eval/mm-vet/grader_prompt.txt").read_text() == (
        "GRADER-STANDIN: compare.\n\nQuestion | Ground truth | Prediction | Correctness\n--- | --- | --- | ---\n")
    # Only what the configs read: allow_patterns, the archive's include list, no macOS junk, no archives left.
    fetched = {p for _, p, _ in standin.downloads()}
    assert not any(p.endswith(("README.md", "bard_0718.jsonl", "llava_instruct_150k.json", "_meta.json"))
                   for p in fetched)
    assert not (data / "eval/mmlu/auxiliary_train").exists()
    assert not list(data.rglob("__MACOSX")) and not list(data.rglob("*.part"))
    assert not list((data / ".prepare").rglob("*.zip")) and not list((data / ".prepare").rglob("*.tar"))
    assert sorted(p.name for p in (data / "LLaVA-Pretrain/images").rglob("*.png"))[:2] == ["000000000.png",
                                                                                          "000000001.png"]
    assert (data / "coco/train2017/000000000001.png").is_file()  # train2017/ stripped


def test_a_second_call_downloads_nothing_and_verify_passes(catalog, standin, online, tmp_path):
    prepare(catalog, list(catalog), tmp_path)
    standin.log.clear()
    assert [r.status for r in prepare(catalog, list(catalog), tmp_path)] == ["present"] * len(catalog)
    assert standin.log == []  # not even an API call
    for entry in catalog.values():
        rows, problems = verify_entry(entry, data_dir(tmp_path))
        assert problems == [], entry.name
        assert rows and all(r.ok for r in rows)
    assert standin.log == []


def test_dry_run_lists_sizes_and_destinations_and_fetches_nothing(catalog, standin, online, tmp_path):
    shown = []
    result = prepare_entry(catalog["llava_80k"], data_dir(tmp_path), dry_run=True, progress=False,
                           show_plan=lambda entry, steps: shown.extend(steps))
    assert result.status == "planned" and standin.downloads() == []
    assert {s.name: s.target for s in shown} == {
        "llava_instruct_80k.json": tmp_path / "data/LLaVA-Instruct-150K/llava_instruct_80k.json",
        "train2017.zip": tmp_path / "data/coco/train2017"}
    assert all(s.size for s in shown)
    assert not (tmp_path / "data/.prepare/done").exists()


# ------------------------------------------------------------------------------------ interrupted downloads
def test_a_download_cut_off_half_way_is_resumed_never_accepted(catalog, world, standin, online, tmp_path):
    hub_zip = "/datasets/liuhaotian/LLaVA-Pretrain/resolve/{}/images.zip"
    coco_zip = "/files/images.cocodataset.org/zips/train2017.zip"
    commit = standin.repos[("dataset", "liuhaotian/LLaVA-Pretrain")].commit
    standin.cut_once |= {hub_zip.format(commit), coco_zip}
    prepare(catalog, ["laion_cc_sbu_558k", "llava_80k"], tmp_path)
    assert not standin.cut_once  # both were cut once
    # Each was asked again from where it broke off (HTTP Range), by huggingface_hub and by lmm.prepare.
    # lmm.prepare asks again from where it broke off (HTTP Range); huggingface_hub asks again too (from its last
    # whole chunk of 10 MB: here from the start, a redo).
    coco = world["urls"]["http://images.cocodataset.org/zips/train2017.zip"]
    assert [r for _, p, r in standin.downloads() if p == coco_zip] == ["", f"bytes={len(coco) // 2}-"]
    assert len([p for _, p, _ in standin.downloads() if p == hub_zip.format(commit)]) == 2
    for entry in ("laion_cc_sbu_558k", "llava_80k"):
        assert verify_entry(catalog[entry], data_dir(tmp_path))[1] == []


def test_a_part_file_left_by_a_killed_run_is_resumed_and_checked(catalog, world, standin, online, tmp_path):
    from lmm.config import compose
    from lmm.prepare import missing_files
    from lmm.prepare.data import _download_name

    source = catalog["llava_80k"].sources[1]
    data = world["urls"]["http://images.cocodataset.org/zips/train2017.zip"]
    part = tmp_path / "data/.prepare/downloads" / (_download_name(source.url) + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    # A half-downloaded archive never counts as present.
    cfg = compose(["data=llava_80k", "stage=finetune", "stage.projector_path=/x", *data_dir(tmp_path)])
    assert any("data.image_folder" in m and "python -m lmm.prepare data llava_80k" in m for m in missing_files(cfg))
    prepare(catalog, ["llava_80k"], tmp_path)
    assert ("GET", "/files/images.cocodataset.org/zips/train2017.zip", "bytes=100-") in standin.log
    assert not part.exists()

    # A .part that is not the start of the file: refused at the checksum (md5 here), deleted, the rerun starts over.
    part.write_bytes(b"x" * 100)
    with pytest.raises(PrepareError, match=r"md5 .* does not match .* deleted, run the same command again"):
        prepare(catalog, ["llava_80k"], tmp_path, force=True)
    assert not part.exists()
    prepare(catalog, ["llava_80k"], tmp_path, force=True)
    assert verify_entry(catalog["llava_80k"], data_dir(tmp_path))[1] == []


def test_a_file_that_does_not_match_its_checksum_or_size_is_refused(catalog, standin, online, tmp_path):
    bad = dataclasses.replace(catalog["vicuna80"].sources[0], sha256="0" * 64)
    entry = dataclasses.replace(catalog["vicuna80"], sources=(bad, *catalog["vicuna80"].sources[1:]))
    with pytest.raises(PrepareError, match=r"question.jsonl: the download sha256 .* does not match the published"):
        prepare_entry(entry, data_dir(tmp_path), progress=False)
    assert not (tmp_path / "data/eval/vicuna80/question.jsonl").exists()
    assert not (tmp_path / "data/.prepare/done/vicuna80.json").exists()

    wrong_size = dataclasses.replace(catalog["mmbench"].sources[0], size=10)
    entry = dataclasses.replace(catalog["mmbench"], sources=(wrong_size,))
    with pytest.raises(PrepareError, match=r"the server has \d+ bytes, the published file 10"):
        prepare_entry(entry, data_dir(tmp_path), progress=False)

    # A Hub file whose bytes differ from the Hub's listed sha256 (a corrupt transfer).
    repo = standin.repos[("dataset", "anon8231489123/ShareGPT_Vicuna_unfiltered")]
    repo.files["ShareGPT_V3_unfiltered_cleaned_split.json"] += b" " * 5000  # LFS-sized now
    listed = repo.sha256("ShareGPT_V3_unfiltered_cleaned_split.json")
    repo.sha256 = lambda path, _listed=listed: "f" * 64 if path.endswith("split.json") else _listed
    with pytest.raises(PrepareError, match=r"sha256 .* does not match the Hub's f{64}.*deleted"):
        prepare(catalog, ["sharegpt"], tmp_path)
    assert not (tmp_path / "data/ShareGPT/sharegpt_clean.json").exists()


def test_not_enough_disk_space_is_refused_before_downloading(catalog, standin, online, tmp_path, monkeypatch):
    from lmm.prepare import space

    monkeypatch.setattr(space, "free_bytes", lambda path: 1000)
    with pytest.raises(PrepareError, match=r"not enough disk space for llava_80k .* needs 1.8 KB \(llava_instruct_"
                                           r"80k.json 456 B \+ train2017.zip 684 B \+ unpacked train2017.zip 684 B\), "
                                           r"1.0 KB free.*nothing was downloaded"):
        prepare(catalog, ["llava_80k"], tmp_path)
    assert standin.downloads() == []


# ----------------------------------------------------------------------------------------------------- verify
def test_verify_fails_after_an_image_is_deleted_or_the_json_truncated(catalog, standin, online, tmp_path):
    prepare(catalog, ["laion_cc_sbu_558k", "mmvet"], tmp_path)
    data = tmp_path / "data"
    (data / "LLaVA-Pretrain/images/00001/000000004.png").unlink()
    rows, problems = verify_entry(catalog["laion_cc_sbu_558k"], data_dir(tmp_path))
    assert [r.ok for r in rows if r.check.startswith("images present")] == [False]
    assert len(problems) == 1 and "1 of 5 images referenced by blip_laion_cc_sbu_558k.json are missing" in problems[0]
    assert "00001/000000004.png" in problems[0] and "python -m lmm.prepare data laion_cc_sbu_558k" in problems[0]

    mmvet_json = data / "eval/mm-vet/mm-vet.json"
    mmvet_json.write_bytes(mmvet_json.read_bytes()[:-20])
    problems = verify_entry(catalog["mmvet"], data_dir(tmp_path))[1]
    assert len(problems) == 1 and "mm-vet.json is not valid JSON" in problems[0] and "truncated" in problems[0]

    (data / "eval/mm-vet/images/v1_1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    mmvet_json.write_text(json.dumps({"v1_1": {"imagename": "v1_1.png"}}))
    problems = verify_entry(catalog["mmvet"], data_dir(tmp_path))[1]
    assert any("mm-vet.json has 1 questions, published 3" in p for p in problems)
    assert any("1 images in" in p and "do not decode" in p and "v1_1.png" in p for p in problems)

    # prepare notices the files no longer match its marker and prepares them again.
    standin.log.clear()
    assert [r.status for r in prepare(catalog, ["laion_cc_sbu_558k", "mmvet"], tmp_path)] == ["prepared"] * 2
    assert standin.downloads()
    for name in ("laion_cc_sbu_558k", "mmvet"):
        assert verify_entry(catalog[name], data_dir(tmp_path))[1] == []


def test_unsafe_archive_members_are_refused(tmp_path):
    from lmm.prepare.archive import unpack

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/ok.png", b"x")
        zf.writestr("../../outside.txt", b"x")
    with pytest.raises(PrepareError, match="outside the destination"):
        unpack(archive, tmp_path / "dest", progress=False)
    assert not (tmp_path / "outside.txt").exists()


# ----------------------------------------------------------------------------------------------- pre-flight
def test_missing_files_names_the_command_for_each_missing_file(catalog, standin, online, tmp_path):
    from lmm.config import compose
    from lmm.prepare import missing_files

    cfg = compose(["experiment=table3/33b_336_mix", *data_dir(tmp_path)])
    messages = missing_files(cfg)
    root = tmp_path / "data"
    expected = {
        "pretrain_data.path": f"python -m lmm.prepare data laion_cc_sbu_558k paths.data_dir={root}",
        "pretrain_data.image_folder": f"python -m lmm.prepare data laion_cc_sbu_558k paths.data_dir={root}",
        "data.path": f"python -m lmm.prepare data llava_80k paths.data_dir={root}",
        "data.image_folder": f"python -m lmm.prepare data llava_80k paths.data_dir={root}",
        "data.sharegpt_path": f"python -m lmm.prepare data sharegpt paths.data_dir={root}",
        "eval.paths.mmbench": f"python -m lmm.prepare data mmbench paths.data_dir={root}",
        "model.path": "python -m lmm.prepare models 33b",
        "vision.path": "python -m lmm.prepare models clip_l14_336",
    }
    for key, command in expected.items():
        assert any(m.startswith(key + " ") and command in m for m in messages), (key, messages)
    assert all("python -m lmm.prepare" in m for m in messages)
    assert any("eval.paths.llava_bench_rules" in m for m in messages)
    # Stage 1 already trained: its data is not needed; a train-only job reads no benchmark.
    later = missing_files(compose(["experiment=table3/33b_336_mix", "task=train", *data_dir(tmp_path)]),
                          stage1_exists=True)
    assert not any(m.startswith(("pretrain_data.", "eval.")) for m in later)
    # Evaluating a trained run reads only the benchmarks.
    evaluation = missing_files(compose(["experiment=table3/33b_336_mix", "task=eval", *data_dir(tmp_path)]))
    assert evaluation and all(m.startswith("eval.paths.") for m in evaluation)

    prepare(catalog, ["laion_cc_sbu_558k", "llava_80k", "sharegpt", "llava_bench", "mmbench"], tmp_path)
    assert [m.split(" ")[0] for m in missing_files(cfg)] == ["model.path", "vision.path"]
    # The tiny presets need no files at all.
    assert missing_files(compose(["eval=synthetic"])) == []


def test_the_65b_preset_explains_that_there_are_no_public_weights(tmp_path, monkeypatch):
    from lmm.config import compose
    from lmm.prepare import missing_files
    from lmm.prepare.models import check, fetch, resolve

    monkeypatch.delenv("LMM_VICUNA_65B", raising=False)
    [model, *_] = resolve(["65b"], ["model.base=null"])  # neither a folder nor a base LLM for stage 0
    with pytest.raises(PrepareError, match="no public weights.*LMM_VICUNA_65B=/path/to/vicuna-65b"):
        fetch(model)
    assert "stage 0" in check(model)[1][0]
    messages = missing_files(compose(["model=65b", "model.base=null", "stage=finetune", "stage.projector_path=/x"]))
    [message] = [m for m in messages if m.startswith("model.path")]
    assert message.startswith("model.path = null:") and "never released" in message
    # With the preset's base, stage 0 trains the LLM from LLaMA-65B: that base is what is fetched and checked.
    [model, *_] = resolve(["65b"])
    assert (model.path, model.local_only) == ("huggyllama/llama-65b", False)
    messages = missing_files(compose(["model=65b", "stage=finetune", "stage.projector_path=/x"]))
    [message] = [m for m in messages if m.startswith("model.")]
    assert message.startswith("model.base = huggyllama/llama-65b: ") and message.count("lmm.prepare models 65b ")


# ------------------------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return prepare_world.model_repos(tmp_path_factory.mktemp("models"))


def serve_models(standin, files, gated_token: str | None = None):
    standin.add_repo(Repo("lmsys/vicuna-7b-v1.3", "model", files["llama"]))
    # As on the Hub: main has a safetensors index whose shards are not all there, and the .bin weights.
    standin.add_repo(Repo("lmsys/vicuna-33b-v1.3", "model", files["llama_bin"]))
    standin.add_repo(Repo("openai/clip-vit-large-patch14-336", "model", files["clip"]))
    standin.add_repo(Repo("meta-llama/Llama-2-13b-chat-hf", "model", files["llama"], auth="gated",
                          allowed_tokens=(gated_token,) if gated_token else ()))


def test_models_are_fetched_into_the_cache_and_checked(model_files, standin, online, tmp_path, capsys):
    from lmm.prepare.models import check, fetch, resolve

    serve_models(standin, model_files)
    overrides = prepare_world.model_overrides(model_files["vocab_size"])
    models = resolve(["7b", "33b", "clip_l14_336"], overrides)
    assert [m.path for m in models] == ["lmsys/vicuna-7b-v1.3", "lmsys/vicuna-33b-v1.3",
                                        "openai/clip-vit-large-patch14-336"]
    for model in models:
        fetch(model)
        rows, problems = check(model)
        assert problems == [] and all(r[3] for r in rows), model.name
    out = capsys.readouterr().out
    assert "shards it names are not in the repo" in out and "PyTorch .bin" in out
    fetched = {p.rsplit("/", 1)[-1] for _, p, _ in standin.downloads()}
    assert {"pytorch_model.bin", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= fetched
    assert not fetched & {"tf_model.h5", "model-00002-of-00002.safetensors"}
    snapshot = Path(online / "hf/hub/models--lmsys--vicuna-33b-v1.3/snapshots")
    assert not list(snapshot.rglob("model.safetensors.index.json"))  # it would shadow the .bin weights offline

    standin.log.clear()
    for model in resolve(["7b", "33b", "clip_l14_336"], overrides):
        assert "already in the cache" in fetch(model)
    assert standin.log == []

    # A preset whose shapes do not match the checkpoint fails its check, naming the field.
    [wrong] = resolve(["7b"], [*overrides, "model.hidden_size=128"])[:1]
    problems = check(wrong)[1]
    assert problems and "config.json hidden_size = 64, the preset says 128" in problems[0]


def test_401_and_gated_repos_give_clear_messages(model_files, standin, online, tmp_path, monkeypatch):
    from lmm.prepare.models import fetch, resolve

    serve_models(standin, model_files, gated_token=prepare_world.TOKEN)
    standin.add_repo(Repo("someone/private-data", "dataset", {"a.json": b"[]"}, auth="private",
                          allowed_tokens=(prepare_world.TOKEN,)))
    with pytest.raises(PrepareError, match=r"someone/private-data: HTTP 401 Unauthorized and no Hugging Face token "
                                           r"was sent.*Set HF_TOKEN=hf_"):
        hub.list_files("someone/private-data", "dataset", "main")

    overrides = prepare_world.model_overrides(model_files["vocab_size"])
    [llama2] = [m for m in resolve(["13b_llama2", "clip_l14_336"], overrides) if m.kind == "llm"]
    with pytest.raises(PrepareError, match=r"gated repo and no Hugging Face token was sent.*HF_TOKEN"):
        fetch(llama2)
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(PrepareError, match=r"gated repo and your token has not been granted access \(HTTP 403 "
                                           r"GatedRepo\): request access at .*/meta-llama/Llama-2-13b-chat-hf"):
        fetch(llama2)
    monkeypatch.setenv("HF_TOKEN", prepare_world.TOKEN)
    assert "fetched" in fetch(llama2)
    assert hub.list_files("someone/private-data", "dataset", "main")[1]


def test_prepare_refuses_to_run_offline(catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PrepareError, match="HF_HUB_OFFLINE is set: prepare downloads"):
        prepare(catalog, ["sharegpt"], tmp_path)


# ---------------------------------------------------------------------------------------------------- the CLI
def run_cli(*args, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([PYTHON, "-m", "lmm.prepare", *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.slow
def test_the_command_line_end_to_end(model_files, world, standin, tmp_path):
    """The real catalogue entry and presets, HF_ENDPOINT / HF_HOME / HF_TOKEN from the environment as on a login
    node; then a compute node's offline load (HF_HUB_OFFLINE=1) of what was fetched."""
    serve_models(standin, model_files, gated_token=prepare_world.TOKEN)
    home = tmp_path / "hf-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_ENDPOINT=standin.base, HF_HOME=str(home), HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1,localhost",
               HF_HUB_DISABLE_PROGRESS_BARS="1", LMM_DATA_DIR=str(tmp_path / "data"),
               LMM_CACHE_DIR=str(tmp_path / "cache"))
    overrides = prepare_world.model_overrides(model_files["vocab_size"])

    plan = run_cli("data", "sharegpt", "--dry-run", env=env)
    assert "ShareGPT_V3_unfiltered_cleaned_split.json" in plan.stdout and "to fetch" in plan.stdout
    assert standin.downloads() == []
    first = run_cli("data", "sharegpt", "--no-progress", env=env)
    assert "sharegpt: prepared" in first.stdout
    assert (tmp_path / "data/ShareGPT/sharegpt_clean.json").is_file()
    assert "already prepared" in run_cli("data", "sharegpt", env=env).stdout
    verify = run_cli("verify", "sharegpt", env=env)
    assert "all checks passed" in verify.stdout and "conversations" in verify.stdout

    run_cli("models", "7b", "33b", "clip_l14_336", *overrides, env=env)
    assert (home / "hub/models--lmsys--vicuna-33b-v1.3").is_dir()
    assert "all checks passed" in run_cli("verify", "7b", "33b", "clip_l14_336", *overrides, env=env).stdout

    gated = run_cli("models", "13b_llama2", "clip_l14_336", *overrides, env=env, check=False)
    assert gated.returncode == 1 and "gated repo and no Hugging Face token was sent" in gated.stderr
    assert "not fetched: 13b_llama2" in gated.stderr
    with_token = {**env, "HF_TOKEN": prepare_world.TOKEN}
    assert run_cli("models", "13b_llama2", "clip_l14_336", *overrides, env=with_token).returncode == 0

    (tmp_path / "data/ShareGPT/sharegpt_clean.json").write_text("[{")
    broken = run_cli("verify", "sharegpt", env=env, check=False)
    assert broken.returncode == 1 and "sharegpt_clean.json is not valid JSON" in broken.stderr

    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing reachable
    load = ("from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, LlamaForCausalLM\n"
            "for repo in ('lmsys/vicuna-7b-v1.3', 'lmsys/vicuna-33b-v1.3'):\n"
            "    model = LlamaForCausalLM.from_pretrained(repo); AutoTokenizer.from_pretrained(repo)\n"
            "    print(repo, model.config.hidden_size)\n"
            "CLIPVisionModel.from_pretrained('openai/clip-vit-large-patch14-336')\n"
            "CLIPImageProcessor.from_pretrained('openai/clip-vit-large-patch14-336')\n"
            "print('offline ok')\n")
    result = subprocess.run([PYTHON, "-c", load], cwd=REPO, env=offline, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lmsys/vicuna-33b-v1.3 64" in result.stdout and "offline ok" in result.stdout


def test_the_catalogue_states_the_published_facts():
    """The real entries: sources, pinned commits and counts as researched (no fixture overrides here)."""
    laion, llava80k = CATALOG["laion_cc_sbu_558k"], CATALOG["llava_80k"]
    assert laion.sources[0].repo_id == "liuhaotian/LLaVA-Pretrain" and laion.checks[0].expected == 558128
    assert llava80k.sources[0].files[0].pattern == "llava_instruct_80k.json" and llava80k.checks[0].expected == 80000
    assert llava80k.sources[1].url == "http://images.cocodataset.org/zips/train2017.zip"
    assert llava80k.sources[1].size == 19_336_861_798 and llava80k.sources[1].md5 == "cced6f7f71b7629ddf16f17bbcfab6b2"
    assert [c.expected for c in CATALOG["mmlu"].checks] == [14042, 285]
    assert CATALOG["mmvet"].checks[0].expected == 218 and CATALOG["mmvet"].checks[0].expected_images == 200
    assert CATALOG["vicuna80"].checks[0].expected == 80
    # Every destination key exists in the composed configs.
    from lmm.prepare.layout import compose_for, config_path

    for entry in CATALOG.values():
        cfg = compose_for(entry)
        for key in entry.dest_keys():
            assert config_path(cfg, key).is_absolute()


def test_an_interrupted_unpack_never_counts_and_resumes_without_downloading_again(catalog, standin, online, tmp_path,
                                                                                 monkeypatch):
    from lmm.config import compose
    from lmm.prepare import archive, data, missing_files

    real_unpack = archive.unpack

    def killed(path, dest, *args, **kwargs):
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "000000000001.png").write_bytes(b"half")  # what a killed unpack may leave
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "unpack", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare(catalog, ["llava_80k"], tmp_path)
    cfg = compose(["data=llava_80k", "stage=finetune", "stage.projector_path=/x", *data_dir(tmp_path)])
    messages = [m for m in missing_files(cfg) if m.startswith("data.")]
    assert messages and all("did not finish: run it again" in m for m in messages)
    assert any("not finished" in r.found for r in verify_entry(catalog["llava_80k"], data_dir(tmp_path))[0])

    monkeypatch.setattr(data, "unpack", real_unpack)
    standin.log.clear()
    prepare(catalog, ["llava_80k"], tmp_path)
    assert not [p for _, p, _ in standin.downloads() if p.endswith("train2017.zip")]  # the archive was kept
    assert verify_entry(catalog["llava_80k"], data_dir(tmp_path))[1] == []
    assert not [m for m in missing_files(cfg) if m.startswith("data.")]
