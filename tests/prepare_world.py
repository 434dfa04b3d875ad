"""Tiny versions of everything `lmm.prepare` fetches, in the published layouts, served by the Hub stand-in; and the
catalogue rewritten to point at them (same entries, destinations and archive layouts; the stand-in's URLs and the
fixtures' counts and checksums)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile
from urllib.parse import urlsplit

from hub_standin import Repo, StandIn
from PIL import Image

from lmm.prepare.catalog import CATALOG
from lmm.prepare.sources import Entry, Records, UrlListSource, UrlSource

TOKEN = "hf_standin_token"


def png(seed: int, size: int = 12) -> bytes:
    image = Image.new("RGB", (size, size), ((seed * 53) % 256, (seed * 101) % 256, (seed * 197) % 256))
    image.putpixel((seed % size, 0), (255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def conversation(question: str, answer: str, image: bool = True) -> list[dict]:
    return [{"from": "human", "value": ("<image>\n" if image else "") + question}, {"from": "gpt", "value": answer}]


def build(standin: StandIn) -> dict:
    """Serve the tiny world; returns {"urls": real URL -> bytes, "counts": entry -> [expected per check]}."""
    urls: dict[str, bytes] = {}
    counts: dict[str, list] = {}

    # Stage 1: LLaVA-Pretrain (the zip's members are the JSON's image names, no leading folder).
    pretrain_images = {f"0000{i // 3}/00000{i:04d}.png": png(i) for i in range(5)}
    pretrain = [{"id": f"p{i}", "image": name, "conversations": conversation("Describe.", f"caption {i}")}
                for i, name in enumerate(pretrain_images)]
    standin.add_repo(Repo("liuhaotian/LLaVA-Pretrain", "dataset", {
        "blip_laion_cc_sbu_558k.json": json.dumps(pretrain).encode(),
        "blip_laion_cc_sbu_558k_meta.json": b"[]",
        "images.zip": zip_bytes(pretrain_images),
        "README.md": b"# LLaVA-Pretrain stand-in\n",
    }))
    counts["laion_cc_sbu_558k"] = [len(pretrain)]

    # Stage 2: LLaVA-80K on COCO train2017 (the official zip puts everything under train2017/).
    coco = {f"{i:012d}.png": png(100 + i) for i in range(1, 4)}
    instruct = [{"id": f"i{i}", "image": name, "conversations": conversation("What is it?", f"answer {i}")}
                for i, name in enumerate(coco)]
    standin.add_repo(Repo("liuhaotian/LLaVA-Instruct-150K", "dataset", {
        "llava_instruct_80k.json": json.dumps(instruct).encode(),
        "llava_instruct_150k.json": json.dumps(instruct * 2).encode(),
    }))
    urls["http://images.cocodataset.org/zips/train2017.zip"] = zip_bytes({f"train2017/{k}": v for k, v in coco.items()})
    counts["llava_80k"] = [len(instruct)]

    sharegpt = [{"id": f"s{i}", "conversations": conversation(f"question {i}", f"reply {i}", image=False)}
                for i in range(6)]
    standin.add_repo(Repo("anon8231489123/ShareGPT_Vicuna_unfiltered", "dataset", {
        "ShareGPT_V3_unfiltered_cleaned_split.json": json.dumps(sharegpt).encode(),
        "ShareGPT_V3_unfiltered_cleaned_split_no_imsorry.json": b"[]",
    }))
    counts["sharegpt"] = [None]

    # LLaVA-Bench (In-the-Wild): 3 questions on 2 images; files the catalogue leaves out (bard, README).
    bench_q = [{"question_id": i, "image": f"00{1 + i % 2}.jpg", "text": f"q{i}",
                "category": ["conv", "detail", "complex"][i]} for i in range(3)]
    standin.add_repo(Repo("liuhaotian/llava-bench-in-the-wild", "dataset", {
        "questions.jsonl": jsonl(bench_q),
        "context.jsonl": jsonl([{"id": f"{k}", "image": f"00{k}.jpg", "caption": f"c{k}"} for k in (1, 2)]),
        "answers_gpt4.jsonl": jsonl([{"question_id": q["question_id"], "text": "ref"} for q in bench_q]),
        "images/001.jpg": png(201), "images/002.jpg": png(202),
        "bard_0718.jsonl": b"{}\n", "README.md": b"stand-in\n",
    }))
    rules = {k: {"role": "Assistant", "prompt": f"RULE-{k}"} for k in
             ("coding", "math", "default", "conv", "detail", "complex", "llava_bench_conv", "llava_bench_detail",
              "llava_bench_complex")}
    rules_url = CATALOG["llava_bench"].sources[1].url
    urls[rules_url] = json.dumps(rules).encode()
    counts["llava_bench"] = [len(bench_q), len(bench_q), 2, None]

    # LLaVA-Bench (COCO): questions name COCO val2014 images by number.
    coco_q = [{"question_id": i, "image": f"{11 + i // 2:012d}.jpg", "text": f"q{i}", "category": "conv"}
              for i in range(4)]
    coco_sources = CATALOG["llava_bench_coco"].sources
    urls[coco_sources[0].url] = jsonl(coco_q)
    urls[coco_sources[1].url] = jsonl([{"question_id": q["question_id"], "text": "ref"} for q in coco_q])
    urls[coco_sources[2].url] = jsonl([{"id": f"{11 + k:012d}", "image": f"{11 + k:012d}.jpg", "captions": ["c"],
                                        "instances": []} for k in (0, 1)])
    for k in (0, 1):
        urls[f"http://images.cocodataset.org/val2014/COCO_val2014_{11 + k:012d}.jpg"] = png(300 + k)
    counts["llava_bench_coco"] = [len(coco_q), len(coco_q), 2, None]

    # MM-Vet: the release zip (mm-vet/mm-vet.json + mm-vet/images/) and the evaluator holding the grader prompt.
    mmvet = {f"v1_{i}": {"imagename": f"v1_{i}.png", "question": f"q{i}", "answer": "a", "capability": ["rec"]}
             for i in range(3)}
    mmvet_zip = {"mm-vet/mm-vet.json": json.dumps(mmvet).encode(),
                 **{f"mm-vet/images/v1_{i}.png": png(400 + i) for i in range(3)},
                 "__MACOSX/mm-vet/._mm-vet.json": b"junk"}
    urls["https://github.com/yuweihao/MM-Vet/releases/download/v1/mm-vet.zip"] = zip_bytes(mmvet_zip)
    urls[CATALOG["mmvet"].sources[1].url] = (
        b'import json\n\nprompt = """GRADER-STANDIN: compare.\n\nQuestion | Ground truth | Prediction | Correctness\n'
        b'--- | --- | --- | ---\n"""\n\ndef main():\n    pass\n')
    counts["mmvet"] = [len(mmvet), None]

    # MMBench dev TSV with base64 images.
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = ["\t".join(header)]
    for i in range(4):
        rows.append("\t".join([str(i), f"question {i}", "nan", "x", "y", "nan", "nan", "A", "cat",
                               base64.b64encode(png(500 + i)).decode()]))
    urls[CATALOG["mmbench"].sources[0].url] = ("\n".join(rows) + "\n").encode()
    counts["mmbench"] = [4]

    # Vicuna-80: FastChat's eval table.
    questions = [{"question_id": i, "text": f"q{i}", "category": "generic"} for i in range(1, 4)]
    vicuna = CATALOG["vicuna80"].sources
    urls[vicuna[0].url] = jsonl(questions)
    urls[vicuna[1].url] = jsonl([{"prompt_id": k, "system_prompt": "s", "prompt_template": "t", "defaults": {}}
                                 for k in (1, 2, 3)])
    urls[vicuna[2].url] = jsonl([{"reviewer_id": f"r{k}", "prompt_id": k, "metadata": {}, "category": c}
                                 for k, c in ((1, "general"), (2, "coding"), (3, "math"))])
    urls[vicuna[3].url] = jsonl([{"question_id": q["question_id"], "text": "ref"} for q in questions])
    counts["vicuna80"] = [len(questions), len(questions), 3, 3]

    # MMLU: Hendrycks' data.tar (data/{dev,val,test,auxiliary_train}).
    mmlu = {}
    for subject in ("astronomy", "virology"):
        mmlu[f"data/dev/{subject}_dev.csv"] = b"".join(b"q%d,a,b,c,d,A\n" % i for i in range(5))
        mmlu[f"data/val/{subject}_val.csv"] = b"q,a,b,c,d,B\n"
        mmlu[f"data/test/{subject}_test.csv"] = b"".join(b"\"q, %d\",a,b,c,d,C\n" % i for i in range(3))
    mmlu["data/auxiliary_train/big.csv"] = b"x,a,b,c,d,A\n" * 10
    urls["https://people.eecs.berkeley.edu/~hendrycks/data.tar"] = tar_bytes(mmlu)
    counts["mmlu"] = [6, 10]

    for url, data in urls.items():
        split = urlsplit(url)
        standin.add_url(f"{split.netloc}{split.path}", data)
    return {"urls": urls, "counts": counts}


def local_url(standin: StandIn, url: str) -> str:
    split = urlsplit(url)
    return f"{standin.base}/files/{split.netloc}{split.path}"


def catalog(standin: StandIn, world: dict) -> dict[str, Entry]:
    """The real catalogue pointed at the stand-in: URLs rewritten, sizes and checksums of the fixtures, and the
    fixtures' counts as the expected ones (the entries' fields, nothing special-cased)."""
    out = {}
    for name, entry in CATALOG.items():
        sources = []
        for source in entry.sources:
            if isinstance(source, UrlSource):
                data = world["urls"][source.url]
                source = dataclasses.replace(
                    source, url=local_url(standin, source.url), size=len(data),
                    sha256=hashlib.sha256(data).hexdigest() if source.sha256 else None,
                    md5=hashlib.md5(data).hexdigest() if source.md5 else None)
            elif isinstance(source, UrlListSource):
                source = dataclasses.replace(source, url=local_url(standin, source.url))
            sources.append(source)
        checks = []
        for check, count in zip(entry.checks, world["counts"][name]):
            changes: dict = {"expected": count}
            if check.expected_files is not None:
                changes["expected_files"] = 2
            if check.expected_images is not None:
                changes["expected_images"] = {"llava_bench": 2, "llava_bench_coco": 2, "mmvet": 3}[name]
            checks.append(dataclasses.replace(check, **changes) if not check.required_keys else check)
        out[name] = dataclasses.replace(entry, sources=tuple(sources), checks=tuple(checks), unpacked_bytes=None)
    return out


def check_of(entry: Entry, what: str) -> Records:
    return next(c for c in entry.checks if c.what == what)


def model_repos(tmp) -> dict[str, dict[str, bytes]]:
    """Tiny checkpoints in the Hub layout: a LLaMA with its tokenizer (safetensors), the same as PyTorch .bin with an
    incomplete safetensors index beside it (as lmsys/vicuna-33b-v1.3's main branch has), and a CLIP."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, LlamaConfig, LlamaForCausalLM

    from lmm.data.tokenizer import build_tiny_tokenizer

    def files(folder) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer(tmp / "tok")
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA_SHAPE, vocab_size=len(tokenizer), max_position_embeddings=2048))
    (tmp / "llama").mkdir()
    llama.save_pretrained(tmp / "llama")
    tokenizer.save_pretrained(tmp / "llama")
    safetensors_repo = files(tmp / "llama")

    bin_repo = {k: v for k, v in safetensors_repo.items() if k != "model.safetensors"}
    buffer = io.BytesIO()
    torch.save(llama.state_dict(), buffer)
    bin_repo["pytorch_model.bin"] = buffer.getvalue()
    bin_repo["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": {
        "lm_head.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors"}}).encode()
    bin_repo["model-00002-of-00002.safetensors"] = safetensors_repo["model.safetensors"]

    clip = CLIPModel(CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 99},
        vision_config={**CLIP_SHAPE}, projection_dim=16))
    (tmp / "clip").mkdir()
    clip.save_pretrained(tmp / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp / "clip")
    clip_repo = files(tmp / "clip")
    clip_repo["tf_model.h5"] = b"not fetched"
    return {"llama": safetensors_repo, "llama_bin": bin_repo, "clip": clip_repo, "vocab_size": len(tokenizer)}


LLAMA_SHAPE = {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4}
CLIP_SHAPE = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 8}


def model_overrides(vocab_size: int) -> list[str]:
    """The tiny checkpoints' shapes as the presets' expected values (config overrides, as a user would give)."""
    return [f"model.hidden_size={LLAMA_SHAPE['hidden_size']}",
            f"model.intermediate_size={LLAMA_SHAPE['intermediate_size']}",
            f"model.num_layers={LLAMA_SHAPE['num_hidden_layers']}",
            f"model.num_heads={LLAMA_SHAPE['num_attention_heads']}", f"model.vocab_size={vocab_size}",
            f"vision.hidden_size={CLIP_SHAPE['hidden_size']}",
            f"vision.intermediate_size={CLIP_SHAPE['intermediate_size']}",
            f"vision.num_layers={CLIP_SHAPE['num_hidden_layers']}",
            f"vision.num_heads={CLIP_SHAPE['num_attention_heads']}", f"vision.image_size={CLIP_SHAPE['image_size']}",
            f"vision.patch_size={CLIP_SHAPE['patch_size']}"]
