"""A sweep's W&B workspace as code (wandb-workspaces), built from the Hydra choices and scores of its runs.

`build_spec` reads the sweep's runs (a runs folder or a W&B export) and returns a plain `DashboardSpec`:
the runs of the sweep's W&B group (stage-2 runs and the analysis run of `analysis.publish`), grouped by
model size and tuning method (and LoRA rank when the sweep varies it), the other Hydra choices the sweep
varies as run-table columns, and sections of panels: training (loss, tokens/s, peak memory), one panel
per benchmark score, cost (GPU-hours per node, $, score vs size, score vs cost) and the analysis run's
tables, plots and charts. `to_workspace` turns it into a `wandb_workspaces.workspaces.Workspace` without
any network call; `save` publishes it (online), updating the workspace saved before when the spec file
holds its URL. Offline (`--offline`, or WANDB_MODE=offline) the command writes the spec as JSON and says
how to publish it.

    python -m analysis.dashboard --runs runs --sweep toy --offline        # writes <runs>/toy/analysis/dashboard.json
    python -m analysis.dashboard --publish runs/toy/analysis/dashboard.json --entity ME   # online
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from analysis.collect import runs_view
from analysis.plots import pick_benchmark
from analysis.publish import JOB_TYPE, default_out, load_sweep, sweep_tables, table_name, wandb_target
from lmm.sweep import SWEEPS_DIR
from lmm.tuning import tuning_method

GROUP_BY = ("model", "tuning")  # Hydra choices lmm.tracking logs as top-level config keys
CHOICES = ("model", "vision", "projector", "tuning", "data")
JOB_TYPES = ("finetune", JOB_TYPE)  # stage-1 runs (job type pretrain) share the group but not these panels
SPEC_VERSION = 1
OFFLINE_MODES = ("offline", "disabled", "dryrun")
PLOTS = ("score_vs_size", "score_vs_cost", "loss_curves")  # analysis.plots' PNGs, logged as plots/<name>
NATIVE_CHARTS = {"score_vs_size": ("wandb/line/v0", {"x": "size_b", "y": "score", "stroke": "series"}),
                 "score_vs_cost": ("wandb/scatter/v0", {"x": "gpu_hours_per_node", "y": "score"})}


@dataclass
class Panel:
    """One panel: `kind` line | bar | scatter | table | media | chart | runs; metrics as `history:KEY`,
    `summary:KEY` or `config:KEY`."""

    kind: str
    title: str
    y: list[str] = field(default_factory=list)
    x: str | None = None
    log_x: bool = False


@dataclass
class Section:
    name: str
    panels: list[Panel] = field(default_factory=list)


@dataclass
class DashboardSpec:
    """Everything the workspace shows, as plain data (JSON round trip: `to_dict` / `from_dict`)."""

    sweep: str
    project: str
    entity: str | None
    name: str
    groupby: list[str]
    job_types: list[str]
    columns: list[str]
    benchmarks: dict[str, list[int]]
    sections: list[Section]
    url: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DashboardSpec:
        sections = [Section(s["name"], [Panel(**p) for p in s["panels"]]) for s in data["sections"]]
        return cls(**{**data, "sections": sections})

    def panels(self) -> list[Panel]:
        return [p for s in self.sections for p in s.panels]


# -- building the spec from the sweep's runs ------------------------------------------------------------


def _varies(view: pd.DataFrame, column: str) -> bool:
    return column in view and view[column].dropna().nunique() > 1


def grid_choices(sweep: str) -> dict[str, list[str]]:
    """The Hydra grid of `sweeps/<sweep>.yaml` (`hydra.sweeper.params`): override → values; {} when none.

    A grid over `experiment` files (the paper's tables, the toy study) also contributes the group choices
    those files override (`override /vision: tiny_48` → vision: [..., tiny_48]).
    """
    from omegaconf import OmegaConf

    path = SWEEPS_DIR / f"{sweep}.yaml"
    if not path.exists():
        return {}
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
    grid = {str(key): [v.strip() for v in str(values).split(",")] for key, values in params.items()}
    for name in grid.get("experiment", []):
        experiment = SWEEPS_DIR.parent / "conf" / "experiment" / f"{name}.yaml"
        if not experiment.exists():
            continue
        for entry in OmegaConf.to_container(OmegaConf.load(experiment)).get("defaults") or []:
            for key, value in (entry.items() if isinstance(entry, dict) else ()):
                group = str(key).removeprefix("override").strip().lstrip("/")
                values = grid.setdefault(group, [])
                if str(value) not in values:
                    values.append(str(value))
    return grid


def score_keys(frame: pd.DataFrame) -> dict[str, list[int]]:
    """Benchmark → beams: those scored by the sweep's runs, and beam 1 of those only asked for so far."""
    scored = frame.dropna(subset=["benchmark"])
    out: dict[str, set[int]] = {}
    for benchmark, beam in zip(scored["benchmark"], scored["beam"]):
        out.setdefault(str(benchmark), set()).add(int(beam))
    for requested in runs_view(frame)["requested"].dropna():
        for benchmark in filter(None, str(requested).split(",")):
            out.setdefault(benchmark, {1})
    return {b: sorted(beams) for b, beams in sorted(out.items())}


def _score(benchmark: str, beam: int) -> str:
    return f"summary:eval/{benchmark}/beam{beam}/overall"


def build_spec(frame: pd.DataFrame, sweep: str, *, project: str = "lmm", entity: str | None = None,
               benchmark: str | None = None, beam: int | None = None, reference: bool | None = None,
               tables_frame: pd.DataFrame | None = None) -> DashboardSpec:
    """The dashboard of a sweep from its tidy frame (`analysis.publish.load_sweep`) and its Hydra grid (if
    sweeps/ has it); table panels for the tables `analysis.publish` logs from `tables_frame` (default
    `frame`: pass the finished runs when `frame` also has unfinished ones). No network."""
    view, grid = runs_view(frame), grid_choices(sweep)

    def varies(column: str, override: str) -> bool:
        return _varies(view, column) or len(grid.get(override, [])) > 1

    groupby = list(GROUP_BY) + (["hp.rank"] if varies("rank", "tuning.rank") else [])
    varied = [c for c in CHOICES if c not in GROUP_BY and varies(c, c)]
    lora = view[view["method"].map(lambda m: tuning_method(m).adapter).astype(bool)]
    varied += [f"hp.{c}" for c in ("alpha", "lr") if _varies(lora, c)]  # LoRA runs off the recipe (Section 3.2)
    benchmarks = score_keys(frame)
    primary = pick_benchmark(frame, benchmark)
    first_beam = beam or 1
    columns = [*GROUP_BY, *varied]

    training = Section("Training", [
        Panel("line", "Training loss", ["history:train/loss"], x="Step"),
        Panel("line", "Tokens/s", ["history:train/tokens_per_s"], x="Step"),
        Panel("line", "Peak memory (GB)", ["history:train/peak_mem_gb"], x="Step"),
    ])
    scores = Section("Scores", [Panel("bar", f"{b} overall", [_score(b, k) for k in beams])
                                for b, beams in benchmarks.items()])
    cost = Section("Cost", [
        Panel("bar", "GPU-hours per node", ["summary:finetune/gpu_hours_per_node",
                                            "summary:cost/gpu_hours_per_node/total"]),
        Panel("bar", "Cost ($)", ["summary:finetune/usd", "summary:cost/usd/total"]),
    ])
    if primary is not None:
        score = _score(primary, first_beam)
        cost.panels += [
            Panel("scatter", f"{primary} vs GPU-hours per node (score vs cost)", [score],
                  x="summary:finetune/gpu_hours_per_node", log_x=True),
            Panel("scatter", f"{primary} vs LLM size (B parameters)", [score], x="config:hp.nominal_params_b",
                  log_x=True),
        ]
    tables_frame = frame if tables_frame is None else tables_frame
    tables = sweep_tables(tables_frame, sweep, reference=reference, benchmark=benchmark, beam=beam) \
        if len(tables_frame) else []
    analysis = Section("Analysis run", [Panel("table", f"Table {t.key}: {t.title}", [table_name(t)]) for t in tables])
    analysis.panels.append(Panel("media", "Plots (analysis.plots)", [f"plots/{p}" for p in PLOTS]))
    if primary is not None:
        analysis.panels += [Panel("chart", f"charts/{name}", [f"charts/{name}_table"]) for name in NATIVE_CHARTS]
    analysis.panels.append(Panel("runs", "Runs compared"))
    for panel in scores.panels:
        columns += [m for m in panel.y if m not in columns]
    columns += ["summary:finetune/gpu_hours_per_node", "summary:finetune/usd"]
    return DashboardSpec(sweep=sweep, project=project, entity=entity, name=f"lmm sweep {sweep}", groupby=groupby,
                         job_types=list(JOB_TYPES), columns=columns, benchmarks=benchmarks,
                         sections=[training, scores, cost, analysis])


# -- the wandb-workspaces objects -----------------------------------------------------------------------


def _metric(ref: str):
    import wandb_workspaces.reports.v2 as wr

    kind, _, key = ref.partition(":")
    return {"summary": wr.SummaryMetric, "config": wr.Config}.get(kind, lambda k: k)(key)


def _column(ref: str) -> str:
    """A run-table column: `config:<first>.value.<rest>` for config keys, as the W&B app names them."""
    if ref.startswith(("summary:", "run:")):
        return ref
    head, _, rest = ref.removeprefix("config:").partition(".")
    return f"config:{head}.value" + (f".{rest}" if rest else "")


def _panel(panel: Panel):
    import wandb_workspaces.reports.v2 as wr

    if panel.kind == "line":
        made = wr.LinePlot(title=panel.title, x=panel.x or "Step", y=[_metric(m) for m in panel.y])
    elif panel.kind == "bar":
        made = wr.BarPlot(title=panel.title, metrics=[_metric(m) for m in panel.y], orientation="v")
    elif panel.kind == "scatter":
        made = wr.ScatterPlot(title=panel.title, x=_metric(panel.x), y=_metric(panel.y[0]), log_x=panel.log_x)
    elif panel.kind == "table":
        made = wr.WeavePanelSummaryTable(table_name=panel.y[0], layout=wr.Layout(w=24, h=10))
    elif panel.kind == "media":
        made = wr.MediaBrowser(title=panel.title, media_keys=list(panel.y), num_columns=len(panel.y))
    elif panel.kind == "chart":
        name = panel.title.removeprefix("charts/")
        spec_id, fields = NATIVE_CHARTS[name]
        made = wr.CustomChart(query={"summaryTable": {"tableKey": panel.y[0]}}, chart_name=spec_id,
                              chart_fields=dict(fields), chart_strings={"title": name.replace("_", " ")})
    elif panel.kind == "runs":
        made = wr.RunComparer(diff_only="split", layout=wr.Layout(w=24, h=10))
    else:
        raise ValueError(f"unknown panel kind {panel.kind!r}")
    # a stable id per panel: the same spec gives the same workspace (and file) every time
    made._id = hashlib.sha256(f"{panel.kind}:{panel.title}:{panel.y}".encode()).hexdigest()[:11]
    return made


def to_workspace(spec: DashboardSpec, entity: str | None = None):
    """The `wandb_workspaces` Workspace of a spec (built locally: no network call)."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    runset = ws.RunsetSettings(
        filters=[expr.Metric("Group") == spec.sweep, expr.Metric("JobType").isin(list(spec.job_types))],
        groupby=[expr.Config(key) for key in spec.groupby],
        pinned_columns=[_column(c) if ":" in c else _column(f"config:{c}") for c in spec.columns],
    )
    sections = [ws.Section(name=s.name, panels=[_panel(p) for p in s.panels], is_open=True) for s in spec.sections]
    return ws.Workspace(entity=entity or spec.entity or "", project=spec.project, name=spec.name, sections=sections,
                        runset_settings=runset, settings=ws.WorkspaceSettings(max_runs=100))


def viewspec(workspace) -> dict | None:
    """The view the W&B app would store (for reading and diffing; None if this library version hides it)."""
    try:
        return json.loads(json.dumps(workspace._spec, default=str))
    except Exception:  # noqa: BLE001 - informative only
        return None


def write_spec(spec: DashboardSpec, path: str | Path) -> Path:
    """The spec (and the view it makes) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"lmm_dashboard": SPEC_VERSION, "spec": spec.to_dict(), "viewspec": viewspec(to_workspace(spec))}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    return path


def read_spec(path: str | Path) -> DashboardSpec:
    payload = json.loads(Path(path).read_text())
    if payload.get("lmm_dashboard") != SPEC_VERSION:
        raise SystemExit(f"{path} is not a dashboard spec of this version (lmm_dashboard: {SPEC_VERSION})")
    return DashboardSpec.from_dict(payload["spec"])


def save(spec: DashboardSpec, *, entity: str | None = None, url: str | None = None) -> str:
    """Publish the workspace (network): update the one at `url` (or the spec's) when given, else create it."""
    import wandb
    import wandb_workspaces.workspaces as ws

    spec.entity = entity or spec.entity or os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    workspace = to_workspace(spec)
    url = url or spec.url
    if url:  # the documented way to edit a saved workspace: load it, change it, save it
        saved = ws.Workspace.from_url(url)
        saved.name, saved.sections = workspace.name, workspace.sections
        saved.settings, saved.runset_settings = workspace.settings, workspace.runset_settings
        workspace = saved
    workspace.save()
    return workspace.url


def offline(flag: bool) -> bool:
    return flag or os.environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.dashboard", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", help="runs folder (the run store and its sweep views)")
    source.add_argument("--wandb-csv", help="a W&B runs export (CSV) instead of a runs folder")
    source.add_argument("--publish", metavar="SPEC", help="publish a spec written offline (online)")
    parser.add_argument("--sweep", help="the sweep (= the W&B group of its runs)")
    parser.add_argument("--out", help="spec file (default <runs>/<sweep>/analysis/dashboard.json)")
    parser.add_argument("--benchmark", help="as for analysis.publish: the score of the scatter plots and tables")
    parser.add_argument("--beam", type=int)
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--project", help="default: the runs' (logger.project), else $WANDB_PROJECT, else lmm")
    parser.add_argument("--entity", help="default: the runs' (logger.entity), else $WANDB_ENTITY")
    parser.add_argument("--url", help="the saved workspace to update (default: the URL the spec file holds)")
    parser.add_argument("--offline", action="store_true", help="only write the spec (also when WANDB_MODE=offline)")
    args = parser.parse_args(argv)

    if args.publish:
        if offline(args.offline):
            raise SystemExit("--publish needs the network: unset WANDB_MODE=offline (and drop --offline)")
        return _publish(read_spec(args.publish), Path(args.publish), entity=args.entity, url=args.url)
    if not args.sweep:
        parser.error("--sweep is required with --runs or --wandb-csv")
    # the choices and benchmarks of every run with a record; the tables of the finished ones (as published)
    frame, records = load_sweep(args.sweep, runs=args.runs, wandb_csv=args.wandb_csv, include_unfinished=True)
    finished, _ = load_sweep(args.sweep, runs=args.runs, wandb_csv=args.wandb_csv)
    project, entity = wandb_target(records, args.project, args.entity)
    spec = build_spec(frame, args.sweep, project=project, entity=entity, benchmark=args.benchmark,
                      beam=args.beam, reference=args.reference, tables_frame=finished)
    if finished.empty:
        print(f"no finished run of sweep {args.sweep!r} yet: build the dashboard again when some have scores "
              "(their score panels and tables are added then)")
    path = Path(args.out) if args.out else default_out(args.sweep, args.runs, args.wandb_csv) / "dashboard.json"
    if path.exists():  # keep the URL of the workspace saved before: publishing again updates it
        with contextlib.suppress(SystemExit, KeyError, TypeError, json.JSONDecodeError):
            spec.url = read_spec(path).url
    write_spec(spec, path)
    print(f"dashboard spec of sweep {args.sweep} ({len(spec.panels())} panels, grouped by "
          f"{', '.join(spec.groupby)}) written to {path}")
    if offline(args.offline):
        print(f"publish it when online:  python -m analysis.dashboard --publish {path}"
              + ("" if spec.entity else "  [--entity ENTITY; default: your W&B default entity]"))
        return 0
    return _publish(spec, path, entity=args.entity, url=args.url)


def _publish(spec: DashboardSpec, path: Path, *, entity: str | None, url: str | None) -> int:
    try:
        spec.url = save(spec, entity=entity, url=url)
    except Exception as error:  # noqa: BLE001 - no network, no API key, no access: say so in one line
        raise SystemExit(f"could not save the workspace ({type(error).__name__}: {error}); the spec is in {path}: "
                         f"publish it later with  python -m analysis.dashboard --publish {path}") from None
    write_spec(spec, path)
    print(f"workspace saved: {spec.url} (spec in {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
