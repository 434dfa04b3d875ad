"""`python -m lmm.prepare {data,models,verify,list}`: get the data, benchmarks and weights, and check them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lmm.prepare.errors import PrepareError

EPILOG = """\
examples:
  python -m lmm.prepare list                                  # what can be fetched, where it goes, what is there
  python -m lmm.prepare data paper paths.data_dir=/scratch/lmm/data
  python -m lmm.prepare data llava_80k mmvet --dry-run         # sizes and destinations, nothing downloaded
  python -m lmm.prepare models 33b 13b clip_l14_336            # into the HF cache (HF_HOME); then HF_HUB_OFFLINE=1
  python -m lmm.prepare verify                                 # everything prepared; non-zero exit on a problem

NAME: a data set (laion_cc_sbu_558k llava_80k sharegpt llava_bench llava_bench_coco mmvet mmbench vicuna80 mmlu),
a group (train, eval, paper, llava_80k_sharegpt) or a conf/eval option (table3); for models a conf/model or
conf/vision preset. KEY=VALUE arguments are config overrides, as for python -m lmm.train.
"""


def _split(items: Sequence[str]) -> tuple[list[str], list[str]]:
    names = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    return names, overrides


def _print_plan(entry, steps) -> None:
    from lmm.prepare.space import human

    print(f"{entry.name}: {entry.title} (dry run: nothing is fetched)")
    for s in steps:
        how = "unpack into" if s.dest.kind == "unpack" else "->"
        print(f"  {s.name}  {human(s.size)}  {s.source.label}\n      {how} {s.target}  "
              f"[{'present' if s.present else 'to fetch'}]")
    for source in entry.sources:
        if hasattr(source, "listing_file"):
            print(f"  + one file per `{source.field}` of {source.listing_file}: {source.label}")
    todo = sum(s.size or 0 for s in steps if not s.present)
    print(f"  to fetch: {human(todo)}" + ("" if all(s.size for s in steps) else " (some sizes unknown)"))


def cmd_data(args) -> int:
    from lmm.prepare.data import prepare_entry
    from lmm.prepare.layout import resolve_names

    names, overrides = _split(args.items)
    if args.no_progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if not names:
        raise PrepareError("name at least one data set (or `paper` for all); `python -m lmm.prepare list` shows them")
    failed = []
    for entry in resolve_names(names):
        try:
            prepare_entry(entry, overrides, keep_archives=args.keep_archives, force=args.force, dry_run=args.dry_run,
                          progress=not args.no_progress, show_plan=_print_plan if args.dry_run else None)
        except PrepareError as err:
            print(f"{entry.name}: FAILED: {err}", file=sys.stderr)
            failed.append(entry.name)
    if failed:
        print(f"not prepared: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_models(args) -> int:
    from lmm.prepare.models import fetch, resolve

    names, overrides = _split(args.items)
    if not names:
        raise PrepareError("name at least one model preset (e.g. 33b); conf/model and conf/vision list them")
    failed = []
    for model in resolve(names, overrides):
        try:
            print(fetch(model, force=args.force))
        except PrepareError as err:
            print(f"{model.name}: FAILED: {err}", file=sys.stderr)
            failed.append(model.name)
    if failed:
        print(f"not fetched: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_verify(args) -> int:
    from lmm.prepare.catalog import ALIASES, CATALOG
    from lmm.prepare.layout import resolve_names
    from lmm.prepare.models import _preset_names, check, model_folder, resolve
    from lmm.prepare.verify import Row, is_prepared, render, verify_entry

    names, overrides = _split(args.items)
    presets = set(_preset_names("model")) | set(_preset_names("vision"))
    data_names = [n for n in names if n not in presets]
    model_names = [n for n in names if n in presets]
    if names:
        entries = resolve_names(data_names) if data_names else []
        models = resolve(model_names, overrides) if model_names else []
    else:  # everything that has been prepared
        entries = [e for e in CATALOG.values() if is_prepared(e, overrides)]
        models = [m for m in resolve(sorted(n for n in presets), overrides)
                  if m.path and model_folder(m) is not None and model_folder(m).exists()]
        if not entries and not models:
            raise PrepareError("nothing prepared yet: run `python -m lmm.prepare data ...` / `models ...` first "
                               f"(groups: {', '.join(sorted(ALIASES))})")
    problems: list[str] = []
    for entry in entries:
        rows, found = verify_entry(entry, overrides, decode=not args.no_decode)
        render(f"{entry.name}: {entry.title}", rows)
        problems += found
    for model in models:
        rows, found = check(model)
        render(f"{model.name} ({model.kind}): {model.path}", [Row(*r) for r in rows])
        problems += found
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


def cmd_list(args) -> int:
    from lmm.prepare import marker
    from lmm.prepare.catalog import CATALOG
    from lmm.prepare.layout import compose_for, config_path, state_dir

    _, overrides = _split(args.items)
    for entry in CATALOG.values():
        cfg = compose_for(entry, overrides)
        state = state_dir(config_path(cfg, "paths.data_dir"))
        status = ("prepared" if marker.read_done(state, entry.name) else
                  "interrupted: run it again" if marker.was_started(state, entry.name) else "not prepared")
        print(f"{entry.name} [{status}]: {entry.title}")
        for i, source in enumerate(entry.sources):
            print(f"  {'from' if i == 0 else '    '}  {source.label}")
        for i, key in enumerate(entry.dest_keys()):
            print(f"  {'to' if i == 0 else '  '}    {key} = {config_path(cfg, key)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmm.prepare", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="fetch, unpack and lay out data sets and benchmarks")
    data.add_argument("items", nargs="*", metavar="NAME | KEY=VALUE")
    data.add_argument("--keep-archives", action="store_true", help="keep downloaded zip/tar files after unpacking")
    data.add_argument("--force", action="store_true", help="prepare again even if the marker says it is done")
    data.add_argument("--dry-run", action="store_true", help="list files, sizes and destinations; fetch nothing")
    data.add_argument("--no-progress", action="store_true", help="no progress bars for downloads and unpacking")
    data.set_defaults(func=cmd_data)
    models = sub.add_parser("models", help="fetch model presets (LLM + tokenizer, CLIP towers) into the HF cache")
    models.add_argument("items", nargs="*", metavar="PRESET | KEY=VALUE")
    models.add_argument("--force", action="store_true", help="ask the Hub even if the cache has everything")
    models.set_defaults(func=cmd_models)
    verify = sub.add_parser("verify", help="check prepared data and models; non-zero exit on any problem")
    verify.add_argument("items", nargs="*", metavar="NAME | PRESET | KEY=VALUE")
    verify.add_argument("--no-decode", action="store_true", help="check images exist, without decoding them")
    verify.set_defaults(func=cmd_verify)
    listing = sub.add_parser("list", help="the catalogue: sources, destinations, state")
    listing.add_argument("items", nargs="*", metavar="KEY=VALUE")
    listing.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
