"""The benchmarks `python -m lmm.eval` knows, registered once by the names `eval.benchmarks` lists.

Each benchmark is one module of this package: its files, prompt, generation settings, judge requests and
scorer together (shared pieces in `base.py` and `common.py`). The runner, `lmm.eval.rescore` and the config
check find them here.
"""

from __future__ import annotations

import functools

from lmm.eval.benchmarks.base import (
    Benchmark,
    BenchmarkError,
    EvalContext,
    Item,
    JudgeFailed,
    MissingBenchmarkData,
    ParseFailures,
)

# Every registered benchmark, by name, in the order tables and configs list them. The config check reads only
# these names: building the registry imports every benchmark module, and the synthetic one's evaluation
# imports torch and transformers (measured: 4.6 s of a 5.0 s import), which a config check must not pay.
BENCHMARK_NAMES = ("llava_bench", "llava_bench_coco", "mmvet", "mmbench", "vicuna80", "mmlu", "synthetic",
                   "synthetic_text")


@functools.cache
def registry() -> dict[str, Benchmark]:
    """The benchmarks by name (imported on first use: see BENCHMARK_NAMES)."""
    from lmm.eval.benchmarks.llava_bench import LlavaBench
    from lmm.eval.benchmarks.mmbench import MMBench
    from lmm.eval.benchmarks.mmlu import MMLU
    from lmm.eval.benchmarks.mmvet import MMVet
    from lmm.eval.benchmarks.synthetic import Synthetic
    from lmm.eval.benchmarks.synthetic_text import SyntheticText
    from lmm.eval.benchmarks.vicuna80 import Vicuna80

    found = {b.name: b for b in (LlavaBench("llava_bench"), LlavaBench("llava_bench_coco"), MMVet(), MMBench(),
                                 Vicuna80(), MMLU(), Synthetic(), SyntheticText())}
    assert tuple(found) == BENCHMARK_NAMES, "register a benchmark in both BENCHMARK_NAMES and registry()"
    return found


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r} in eval.benchmarks; known: {', '.join(BENCHMARK_NAMES)}")
    return registry()[name]


__all__ = ["BENCHMARK_NAMES", "Benchmark", "BenchmarkError", "EvalContext", "Item", "JudgeFailed",
           "MissingBenchmarkData", "ParseFailures", "get_benchmark", "registry"]
