"""The benchmarks `python -m lmm.eval` knows, by the names `eval.benchmarks` lists."""

from __future__ import annotations

from lmm.eval.benchmarks.base import (
    Benchmark,
    BenchmarkError,
    EvalContext,
    Item,
    JudgeFailed,
    MissingBenchmarkData,
    ParseFailures,
)


def _registry() -> dict[str, Benchmark]:
    from lmm.eval.benchmarks.llava_bench import LlavaBench
    from lmm.eval.benchmarks.mmbench import MMBench
    from lmm.eval.benchmarks.mmlu import MMLU
    from lmm.eval.benchmarks.mmvet import MMVet
    from lmm.eval.benchmarks.synthetic import Synthetic
    from lmm.eval.benchmarks.synthetic_text import SyntheticText
    from lmm.eval.benchmarks.vicuna80 import Vicuna80

    return {b.name: b for b in (LlavaBench("llava_bench"), LlavaBench("llava_bench_coco"), MMVet(), MMBench(),
                                Vicuna80(), MMLU(), Synthetic(), SyntheticText())}


BENCHMARK_NAMES = ("llava_bench", "llava_bench_coco", "mmvet", "mmbench", "vicuna80", "mmlu", "synthetic",
                   "synthetic_text")


def get_benchmark(name: str) -> Benchmark:
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown benchmark {name!r} in eval.benchmarks; known: {', '.join(BENCHMARK_NAMES)}")
    return registry[name]


__all__ = ["BENCHMARK_NAMES", "Benchmark", "BenchmarkError", "EvalContext", "Item", "JudgeFailed",
           "MissingBenchmarkData", "ParseFailures", "get_benchmark"]
