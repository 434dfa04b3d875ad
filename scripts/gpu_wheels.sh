#!/usr/bin/env bash
# Fill .whl/ with wheels for the GPU machine (Python 3.12, x86_64, no network) of the packages it lacks, at the
# versions this project's .venv runs: scripts/gpu_check.sh installs them with --no-deps before its checks.
# Never torch, transformers, peft, accelerate, numpy & co.: the machine's own builds are used. .whl/ is
# git-ignored (.git/info/exclude); the device tool carries it (`carry: [".whl"]`, < 64 MiB in all).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=.whl
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

# What lmm imports (hydra, omegaconf, the submitit launcher it registers, rich for plans), what DeepSpeed
# requires beyond torch/numpy/packaging/psutil/tqdm, and bitsandbytes; each at the .venv's version.
PACKAGES=(hydra-core omegaconf hydra-submitit-launcher submitit cloudpickle rich markdown-it-py mdurl pygments
          hjson py-cpuinfo msgpack einops ninja pydantic pydantic-core annotated-types typing-inspection
          typing-extensions bitsandbytes)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
           --platform any)

rm -rf "$DEST" && mkdir -p "$DEST"
for name in "${PACKAGES[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "$name==$(version "$name")"
done
# Published as source only; both are pure Python once built. DeepSpeed builds no op here (DS_BUILD_OPS=0):
# on CUDA it compiles an op only when one is used, and ZeRO-3 with the Trainer's torch AdamW uses none.
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" \
  "deepspeed==$(version deepspeed)" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"

# bitsandbytes ships a library per CUDA/ROCm/XPU version (43 MB): keep CUDA 13.x (torch 2.11 cu13 there) and
# the CPU one, and drop the others from the wheel and its RECORD.
"$PY" - "$DEST"/bitsandbytes-*.whl <<'EOF'
import re, sys, zipfile, os
path = sys.argv[1]
keep = re.compile(r"libbitsandbytes_(cuda13\d|cpu)\.so$")
drop = lambda n: "libbitsandbytes_" in n and n.endswith(".so") and not keep.search(n)
slim = path + ".slim"
with zipfile.ZipFile(path) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if drop(info.filename):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            data = ("\n".join(l for l in lines if not drop(l.split(",")[0])) + "\n").encode()
        dst.writestr(info, data)
os.replace(slim, path)
EOF
ls -la "$DEST"
du -sh "$DEST"
