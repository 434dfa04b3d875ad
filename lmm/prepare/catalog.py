"""The catalogue: every data set and benchmark the paper's configs name, with its sources and published counts.

Destinations are config keys (`data.path`, `eval.paths.mmvet`, ...) resolved from the composed run config, so files
land exactly where `conf/data/*.yaml` and `BenchmarkPaths` read them. Sources, pinned commits, sizes, checksums and
counts are stated beside each entry.
"""

from __future__ import annotations

from lmm.prepare.sources import Dest, Entry, HubFile, HubSource, Records, UrlListSource, UrlSource

# LLaVA's repository at the commit read for these facts (haotian-liu/LLaVA, "Update README.md"): the judge rules,
# LLaVA-Bench (COCO)'s questions, GPT-4 answers and judge context. Sizes and sha256 are those of the files there.
LLAVA_COMMIT = "c121f0432da27facab705978f83c4ada465e46fd"
LLAVA_RAW = f"https://raw.githubusercontent.com/haotian-liu/LLaVA/{LLAVA_COMMIT}"
# FastChat's last commit with the Vicuna-80 eval table (lm-sys/FastChat; the next, a0ba8c97 "Deprecate old
# evaluation package (#1811)", deleted fastchat/eval/table).
FASTCHAT_COMMIT = "69d085eadab8e9fcf831a97e17e132658c3d2272"
FASTCHAT_RAW = f"https://raw.githubusercontent.com/lm-sys/FastChat/{FASTCHAT_COMMIT}/fastchat/eval/table"
# MM-Vet's repository (yuweihao/MM-Vet) at the commit read: its grader prompt is the module-level `prompt` string of
# mm-vet_evaluator.py (the benchmark publishes it nowhere else).
MMVET_COMMIT = "acde843e02dae30047bb456ee4a8ab28dee7e0ae"

RULES = UrlSource(
    f"{LLAVA_RAW}/llava/eval/table/rule.json", Dest("eval.paths.llava_bench_rules"), size=9098,
    sha256="dd7345a44ce9f7a24e51a30ee030cdab32346f9d08e3359c80545ff1312b1e07")
RULES_CHECK = Records(
    "eval.paths.llava_bench_rules", what="judge rules",
    required_keys=("llava_bench_conv", "llava_bench_detail", "llava_bench_complex", "conv", "detail", "complex"),
    source="LLaVA llava/eval/table/rule.json")

ENTRIES: tuple[Entry, ...] = (
    Entry(
        name="laion_cc_sbu_558k",
        title="LCS-558K: LAION/CC/SBU BLIP captions with images (stage 1)",
        kind="train",
        overrides=("data=laion_cc_sbu_558k",),
        # huggingface.co/datasets/liuhaotian/LLaVA-Pretrain: blip_laion_cc_sbu_558k.json (181 MB) and images.zip
        # (27.4 GB), whose members are the `image` names of the JSON (e.g. 00453/004539375.jpg).
        sources=(HubSource("liuhaotian/LLaVA-Pretrain", (
            HubFile("blip_laion_cc_sbu_558k.json", Dest("data.path")),
            HubFile("images.zip", Dest("data.image_folder", "unpack", strip="images/")),
        )),),
        checks=(Records("data.path", expected=558128, images="data.image_folder",
                        source="LLaVA docs/Data.md: LAION/CC/SBU BLIP-Caption Concept-balanced 558K"),),
        unpacked_bytes=27_400_000_000,
    ),
    Entry(
        name="llava_80k",
        title="LLaVA-80K visual instructions (stage 2) on COCO train2017",
        kind="train",
        overrides=("data=llava_80k",),
        # llava_instruct_80k.json of huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K: the 80K subset the
        # paper used (40K conversation + 40K complex reasoning). Its images are COCO train2017, from COCO's
        # official archive (19,336,861,798 bytes, md5 as cocodataset.org publishes it; members train2017/<id>.jpg).
        sources=(
            HubSource("liuhaotian/LLaVA-Instruct-150K", (HubFile("llava_instruct_80k.json", Dest("data.path")),)),
            UrlSource("http://images.cocodataset.org/zips/train2017.zip",
                      Dest("data.image_folder", "unpack", strip="train2017/"),
                      size=19_336_861_798, md5="cced6f7f71b7629ddf16f17bbcfab6b2"),
        ),
        checks=(Records("data.path", expected=80000, images="data.image_folder",
                        source="LLaVA docs/Data.md (llava_instruct_80k.json); H. Liu, haotian-liu/LLaVA issue #658"),),
        unpacked_bytes=19_336_861_798,
    ),
    Entry(
        name="sharegpt",
        title="ShareGPT text-only conversations (mixed into stage 2 by data=llava_80k_sharegpt)",
        kind="train",
        overrides=("data=llava_80k_sharegpt",),
        # huggingface.co/datasets/anon8231489123/ShareGPT_Vicuna_unfiltered, file
        # ShareGPT_V3_unfiltered_cleaned_split.json (673 MB): ShareGPT cleaned of HTML and split into conversations
        # of at most 2,048 tokens, as FastChat prepares it for Vicuna; LLaVA-format `conversations` (human/gpt).
        # Written where data.sharegpt_path reads it (ShareGPT/sharegpt_clean.json).
        sources=(HubSource("anon8231489123/ShareGPT_Vicuna_unfiltered", (
            HubFile("ShareGPT_V3_unfiltered_cleaned_split.json", Dest("data.sharegpt_path")),)),),
        # No published count: derived data sets built from this file report 94,145 conversations; the download is
        # checked against the Hub's sha256 instead.
        checks=(Records("data.sharegpt_path", what="conversations"),),
    ),
    Entry(
        name="llava_bench",
        title="LLaVA-Bench (In-the-Wild): 60 questions on 24 images, GPT-4 references, judge rules",
        kind="eval",
        overrides=(),
        # huggingface.co/datasets/liuhaotian/llava-bench-in-the-wild (LLaVA docs/Evaluation.md: "Extract contents
        # of llava-bench-in-the-wild to ./playground/data/eval/llava-bench-in-the-wild").
        sources=(
            HubSource("liuhaotian/llava-bench-in-the-wild", (
                HubFile("questions.jsonl", Dest("eval.paths.llava_bench", "tree")),
                HubFile("context.jsonl", Dest("eval.paths.llava_bench", "tree")),
                HubFile("answers_gpt4.jsonl", Dest("eval.paths.llava_bench", "tree")),
                HubFile("images/*", Dest("eval.paths.llava_bench", "tree")),
            )),
            RULES,
        ),
        checks=(
            Records("eval.paths.llava_bench", "questions.jsonl", expected=60, what="questions",
                    images="eval.paths.llava_bench", images_sub="images", expected_images=24,
                    source="LLaVA paper: 60 questions on 24 images"),
            Records("eval.paths.llava_bench", "answers_gpt4.jsonl", expected=60, what="GPT-4 answers"),
            Records("eval.paths.llava_bench", "context.jsonl", expected=24, what="image contexts"),
            RULES_CHECK,
        ),
    ),
    Entry(
        name="llava_bench_coco",
        title="LLaVA-Bench (COCO): 90 questions on 30 COCO val2014 images",
        kind="eval",
        overrides=(),
        # The questions and GPT-4 answers (playground/data/coco2014_val_qa_eval/) and the judge's captions and boxes
        # (llava/eval/table/caps_boxes_coco2014_val_80.jsonl) from LLaVA's repository; the 30 images one by one from
        # COCO's official image server (not the 6.2 GB val2014 archive).
        sources=(
            UrlSource(f"{LLAVA_RAW}/playground/data/coco2014_val_qa_eval/qa90_questions.jsonl",
                      Dest("eval.paths.llava_bench_coco", "tree", subpath="qa90_questions.jsonl"), size=12242,
                      sha256="2a77196696b5602b544244ace9aeac21300513be85b5e53eb2414d00cddbe1c7"),
            UrlSource(f"{LLAVA_RAW}/playground/data/coco2014_val_qa_eval/qa90_gpt4_answer.jsonl",
                      Dest("eval.paths.llava_bench_coco", "tree", subpath="qa90_gpt4_answer.jsonl"), size=41305,
                      sha256="5fd1a760483fb54e62a717a406add8a986f3e03a40d037b5d6515828cc90dbc5"),
            UrlSource(f"{LLAVA_RAW}/llava/eval/table/caps_boxes_coco2014_val_80.jsonl",
                      Dest("eval.paths.llava_bench_coco", "tree", subpath="caps_boxes_coco2014_val_80.jsonl"),
                      size=58574, sha256="818d3df2b52784699bbdc129b6bc68e035d78ff8f5093c3e2ce5e0f726549b15"),
            UrlListSource("eval.paths.llava_bench_coco", "qa90_questions.jsonl", "image",
                          "http://images.cocodataset.org/val2014/COCO_val2014_{value}",
                          Dest("eval.paths.llava_bench_coco", "tree", subpath="images/COCO_val2014_{value}")),
            RULES,
        ),
        checks=(
            Records("eval.paths.llava_bench_coco", "qa90_questions.jsonl", expected=90, what="questions",
                    images="eval.paths.llava_bench_coco", images_sub="images", expected_images=30,
                    image_prefixes=("", "COCO_val2014_"), source="LLaVA paper: 90 questions on 30 COCO images"),
            Records("eval.paths.llava_bench_coco", "qa90_gpt4_answer.jsonl", expected=90, what="GPT-4 answers"),
            Records("eval.paths.llava_bench_coco", "caps_boxes_coco2014_val_80.jsonl", expected=80,
                    what="image contexts"),
            RULES_CHECK,
        ),
    ),
    Entry(
        name="mmvet",
        title="MM-Vet: 218 questions on 200 images, and its grader prompt",
        kind="eval",
        overrides=(),
        # The official release (github.com/yuweihao/MM-Vet, README "Download Dataset"): mm-vet.zip holds
        # mm-vet/mm-vet.json and mm-vet/images/. The grader prompt is the `prompt` string of mm-vet_evaluator.py.
        sources=(
            UrlSource("https://github.com/yuweihao/MM-Vet/releases/download/v1/mm-vet.zip",
                      Dest("eval.paths.mmvet", "unpack", strip="mm-vet/")),
            UrlSource(f"https://raw.githubusercontent.com/yuweihao/MM-Vet/{MMVET_COMMIT}/mm-vet_evaluator.py",
                      Dest("eval.paths.mmvet_grader_prompt"), size=15232,
                      sha256="68cfd25dc1c83d9dbf695c86854749083fc3899398ef88ca2d70cea3ddd82cbf",
                      python_string="prompt"),
        ),
        checks=(
            Records("eval.paths.mmvet", "mm-vet.json", expected=218, what="questions", images="eval.paths.mmvet",
                    images_sub="images", image_field="imagename", expected_images=200,
                    source="MM-Vet paper: 218 questions, 200 images"),
            Records("eval.paths.mmvet_grader_prompt", what="grader prompt"),
        ),
    ),
    Entry(
        name="mmbench",
        title="MMBench dev (20230712 TSV, images inline as base64)",
        kind="eval",
        overrides=(),
        # The URL LLaVA's docs/Evaluation.md gives for mmbench_dev_20230712.tsv (OpenMMLab's download server).
        sources=(UrlSource(
            "https://download.openmmlab.com/mmclassification/datasets/mmbench/mmbench_dev_20230712.tsv",
            Dest("eval.paths.mmbench")),),
        # No count is published for this file's rows (one per question, or one per circular pass): the MMBench
        # repository (issue #31) states 1,164 dev questions of v1.0 and "over 4000" rows in the file.
        checks=(Records("eval.paths.mmbench", what="rows"),),
    ),
    Entry(
        name="vicuna80",
        title="Vicuna-80: 80 questions, the GPT-4 reviewer prompts, GPT-3.5's reference answers",
        kind="eval",
        overrides=(),
        sources=(
            UrlSource(f"{FASTCHAT_RAW}/question.jsonl", Dest("eval.paths.vicuna80", "tree", subpath="question.jsonl"),
                      size=12885, sha256="590c39157bc561eadd7f03cad4be18c2b597f93029780af65f86718f39eafa87"),
            UrlSource(f"{FASTCHAT_RAW}/prompt.jsonl", Dest("eval.paths.vicuna80", "tree", subpath="prompt.jsonl"),
                      size=3849, sha256="475f1ff9e2872fe0ffd43db38fd5c3277f46fe6b2d62fcd2f968a0c9e59391a3"),
            UrlSource(f"{FASTCHAT_RAW}/reviewer.jsonl", Dest("eval.paths.vicuna80", "tree", subpath="reviewer.jsonl"),
                      size=519, sha256="f9bbe8afca441761cbbe5ed3298101e63e8e2d42a2f1dea0ce2c5c991b8d5893"),
            UrlSource(f"{FASTCHAT_RAW}/answer/answer_gpt35.jsonl", Dest("eval.paths.vicuna80_reference"),
                      size=107603, sha256="c6545739b0738eba5f9348e77f680031aec076a72ecba71b3014e7b1b0dfe099"),
        ),
        checks=(
            Records("eval.paths.vicuna80", "question.jsonl", expected=80, what="questions",
                    source="Vicuna blog / FastChat eval table: 80 questions"),
            Records("eval.paths.vicuna80_reference", expected=80, what="reference answers"),
            Records("eval.paths.vicuna80", "prompt.jsonl", expected=3, what="reviewer prompts"),
            Records("eval.paths.vicuna80", "reviewer.jsonl", expected=3, what="reviewers"),
        ),
    ),
    Entry(
        name="mmlu",
        title="MMLU: 57 subjects, 5 dev shots each, 14,042 test questions (Hendrycks' CSVs)",
        kind="eval",
        overrides=(),
        # Hendrycks' release (github.com/hendrycks/test README): data.tar with data/{dev,val,test}/<subject>_*.csv;
        # auxiliary_train is left out.
        sources=(UrlSource("https://people.eecs.berkeley.edu/~hendrycks/data.tar",
                           Dest("eval.paths.mmlu", "unpack", strip="data/", include=("dev/*", "val/*", "test/*"))),),
        checks=(
            Records("eval.paths.mmlu", "test/*_test.csv", expected=14042, what="test questions", expected_files=57,
                    source="MMLU paper: 14,042 test questions in 57 subjects"),
            Records("eval.paths.mmlu", "dev/*_dev.csv", expected=285, what="dev shots", expected_files=57),
        ),
    ),
)

CATALOG: dict[str, Entry] = {e.name: e for e in ENTRIES}

# Names a user may give beyond the entries: the data configs (conf/data) and benchmark groups.
ALIASES: dict[str, tuple[str, ...]] = {
    "llava_80k_sharegpt": ("llava_80k", "sharegpt"),
    "train": ("laion_cc_sbu_558k", "llava_80k", "sharegpt"),
    "eval": ("llava_bench", "llava_bench_coco", "mmvet", "mmbench", "vicuna80", "mmlu"),
    "paper": tuple(e.name for e in ENTRIES),
    "all": tuple(e.name for e in ENTRIES),
}

# The entries a data config (conf/data/<name>.yaml) reads.
DATA_ENTRIES: dict[str, tuple[str, ...]] = {
    "laion_cc_sbu_558k": ("laion_cc_sbu_558k",),
    "llava_80k": ("llava_80k",),
    "llava_80k_sharegpt": ("llava_80k", "sharegpt"),
    "sharegpt": ("sharegpt",),  # stage 0's data (conf/stage0/vicuna.yaml)
}

# The entry of each benchmark name of eval.benchmarks (synthetic data is generated, never fetched).
BENCHMARK_ENTRIES: dict[str, str] = {
    "llava_bench": "llava_bench", "llava_bench_coco": "llava_bench_coco", "mmvet": "mmvet",
    "mmbench": "mmbench", "vicuna80": "vicuna80", "mmlu": "mmlu",
}
