"""`python -m lmm.eval`: evaluate a trained run (found from the config's run id, or `+run=PATH`), or a
checkpoint trained elsewhere (`+checkpoint=HUB_ID_OR_FOLDER`: a LLaVA in the Hugging Face format, or a bare LLM)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import lmm.config  # noqa: F401  (registers the schema and resolvers before Hydra composes)


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lmm.eval.runner import EvalFailed, evaluate_run, format_results, resolve_run

    if not cfg.eval.benchmarks:
        print("eval.benchmarks is empty: choose some, e.g. eval=synthetic or eval=paper", file=sys.stderr)
        sys.exit(2)
    try:
        if cfg.get("checkpoint"):
            from lmm.eval.checkpoint import evaluate_checkpoint, explicit_overrides

            # A checkpoint that cannot be read or evaluated raises CheckpointError (a ValueError): exit 2 below.
            folder, results, skipped = evaluate_checkpoint(cfg, str(cfg.checkpoint), explicit=explicit_overrides())
            if skipped:
                print(f"skipped (a bare LLM takes no images): {', '.join(skipped)}", flush=True)
        else:
            folder, cfg = resolve_run(cfg)
            results = evaluate_run(cfg, folder)
    except EvalFailed as e:
        if e.results:
            print(format_results(e.results), flush=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{folder}\n{format_results(results)}", flush=True)


if __name__ == "__main__":
    main()
