"""W&B dashboards of a sweep, offline: the analysis run (tables = the Markdown tables' cells, plots, charts,
one run id across publishes, from a runs folder or a W&B export) and the workspace spec (groups, one panel
per metric, no network call while building it; saving twice updates one workspace).

The runs are real tiny runs (`run_pipeline`, debug=fast) evaluated for real on the synthetic benchmark; the
judged LLaVA-Bench scores are written in the shape the evaluation runner merges (no judge is reachable).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from test_tracking import read_offline_run  # the offline .wandb reader of the tracking tests

from analysis import dashboard, publish
from analysis.tables import main as tables_main
from lmm.config import compose
from lmm.pipeline import run_pipeline
from lmm.records import read_record, update_record

RUNS = {
    "s_full": ["model=tiny_s", "tuning=full"],
    "s_lora8": ["model=tiny_s", "tuning=lora", "tuning.rank=8"],
    "s_lora4": ["model=tiny_s", "tuning=lora", "tuning.rank=4"],
    "m_full": ["model=tiny_m", "tuning=full"],
}
LLAVA_BENCH = {"s_full": 50.0, "s_lora8": 45.0, "m_full": 55.0}


def _overrides(root: Path, name: str) -> list[str]:
    return [f"paths.root={root}", "debug=fast", "sweep=toy", "eval=synthetic", *RUNS[name]]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("publish")
    folders = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning OpenMP threads make tiny runs ~20x slower on 2 shared cores
    try:
        for name in RUNS:
            folders[name] = run_pipeline(compose(_overrides(root, name)))
            if name in LLAVA_BENCH:
                score = LLAVA_BENCH[name]
                update_record(folders[name], eval={**read_record(folders[name])["eval"], "llava_bench": {"beam1": {
                    "overall": score, "std": 0.1, "judge_model": "fake-judge", "runs": [score - 0.1, score + 0.1],
                    "categories": {"conv": score - 5, "detail": score - 10, "complex": score + 5}}}})
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "runs": root / "runs", "folders": folders}


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> Path:
    """Offline W&B with every W&B folder and $HOME under tmp_path; returns the (empty) home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection raises (sockets of any family, create_connection)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network call attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def markdown_tables(text: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """`python -m analysis.tables` output → table key → (header cells, body rows of cells), None if empty."""
    out = {}
    for chunk in text.split("**Table ")[1:]:
        key = chunk.split(".**", 1)[0]
        lines = [line.strip() for line in chunk.splitlines() if line.strip().startswith("|")]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        out[key] = (cells[0], cells[2:]) if cells else None  # cells[1] is the alignment row; None: "(no runs)"
    return out


def cli_tables(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert tables_main(["--table", "all", *args]) == 0
    return markdown_tables(capsys.readouterr().out)


def logged(run_dir: Path) -> dict:
    """An offline run: its run record, config, summary, and the logged tables as (columns, rows)."""
    [path] = run_dir.glob("run-*.wandb")
    data = read_offline_run(path)
    summary = data["summary"]  # nested keys joined by "/": a logged table is <key>/_type, <key>/path, ...
    data["media"] = {key[:-len("/_type")]: {"type": value, "file": run_dir / "files" / summary[key[:-5] + "path"]}
                     for key, value in summary.items() if key.endswith("/_type")}
    data["tables"] = {}
    for key, media in data["media"].items():
        if media["type"] == "table-file" and key.startswith("tables/"):
            table = json.loads(media["file"].read_text())
            data["tables"][key] = (table["columns"], table["data"])
    return data


def key_of(name: str) -> str:
    """W&B key → analysis.tables key: tables/table_3a → 3a, tables/sweep_cost → sweep-cost."""
    return name.removeprefix("tables/").removeprefix("table_").replace("_", "-")


# -- the analysis run -----------------------------------------------------------------------------------


def test_offline_analysis_run_holds_the_markdown_tables_plots_and_charts(sweep, wandb_env, capsys):
    runs = str(sweep["runs"])
    wandb_dir = sweep["runs"] / "toy" / "analysis" / "wandb"  # the default: beside the sweep's view
    before = set(wandb_dir.glob("offline-run-*"))
    assert publish.main(["--runs", runs, "--sweep", "toy"]) == 0
    said = capsys.readouterr().out
    run_dirs = sorted(set(wandb_dir.glob("offline-run-*")) - before)
    assert len(run_dirs) == 1 and f"wandb sync {run_dirs[0]}" in said
    run = logged(run_dirs[0])
    record = run["run"]
    assert (record.run_id, record.run_group, record.job_type) == ("analysis-toy", "toy", "analysis")
    assert run["config"]["sweep"] == "toy" and len(run["config"]["run_ids"]) == len(RUNS)

    # one W&B table per paper table with data, plus the cost tables; cells = the Markdown tables' cells
    markdown = cli_tables(capsys, "--runs", runs, "--sweep", "toy")
    assert {key_of(k) for k in run["tables"]} == {"1", "3a", "4", "5", "cost", "sweep-cost"}
    assert markdown["2"] is None and markdown["3b"] is None  # no MM-Vet, no MMBench score: not logged
    for name, (columns, rows) in run["tables"].items():
        assert (columns, rows) == markdown[key_of(name)], name
    assert len(run["tables"]["tables/cost"][1]) == len(RUNS)

    # the PNGs of analysis.plots as images, and W&B's own line and scatter charts
    for plot in dashboard.PLOTS:
        image = run["media"][f"plots/{plot}"]
        assert image["type"] == "image-file"
        with Image.open(image["file"]) as png:
            assert png.format == "PNG"
    chart = json.loads(run["media"]["charts/score_vs_size_table"]["file"].read_text())
    assert chart["columns"] == ["size_b", "score", "series", "size"]
    assert {(r[3], r[1]) for r in chart["data"]} >= {("tiny_s", 50.0), ("tiny_m", 55.0)}  # LLaVA-Bench, full
    chart = json.loads(run["media"]["charts/score_vs_cost_table"]["file"].read_text())
    assert chart["columns"] == ["gpu_hours_per_node", "score", "label"] and len(chart["data"]) == 3
    assert not any(wandb_env.iterdir()), "W&B wrote into $HOME"


def test_publishing_again_writes_to_the_same_run(sweep, wandb_env):
    first = publish.publish("toy", runs=str(sweep["runs"]), mode="offline")
    second = publish.publish("toy", runs=str(sweep["runs"]), mode="offline")
    assert first.run_id == second.run_id == publish.analysis_run_id("toy") == "analysis-toy"
    assert first.run_dir != second.run_dir  # W&B keeps one offline folder per publish, of the same run
    records = [logged(d)["run"] for d in (first.run_dir, second.run_dir)]
    assert {(r.run_id, r.run_group, r.job_type) for r in records} == {("analysis-toy", "toy", "analysis")}
    assert logged(second.run_dir)["tables"] == logged(first.run_dir)["tables"]


@pytest.mark.slow  # the paper's reference records compose every paper experiment (~20 s here)
def test_reference_tables_show_the_reported_values_beside(sweep, wandb_env, capsys, tmp_path):
    done = publish.publish("toy", runs=str(sweep["runs"]), mode="offline", reference=True, out=tmp_path / "out")
    run = logged(done.run_dir)
    markdown = cli_tables(capsys, "--runs", str(sweep["runs"]), "--sweep", "toy", "--reference")
    assert "Overall (paper)" in run["tables"]["tables/table_1"][0]
    for name, cells in run["tables"].items():
        assert cells == markdown[key_of(name)], name


def _wandb_export(sweep: dict, path: Path) -> Path:
    """A W&B runs export (the UI's CSV) of the sweep: the keys lmm.tracking logs for both stages."""
    from lmm.tracking import eval_summary_metrics, stage_summary_metrics, tracking_config

    rows = []
    for name, folder in sweep["folders"].items():
        record = read_record(folder)
        cfg = compose(_overrides(sweep["root"], name))
        stage1 = Path(record["stage1"]["folder"])
        for stage, stats, run_id in (("pretrain", read_record(stage1)["pretrain"], stage1.name),
                                     ("finetune", record["finetune"], record["run_id"])):
            flat = pd.json_normalize(tracking_config(cfg, stage, run_id), sep=".").iloc[0].to_dict()
            flat.update(stage_summary_metrics(cfg, stage, stats, run_id))
            if stage == "finetune":
                flat.update(eval_summary_metrics(record))
            rows.append({"Name": run_id, **flat})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_publish_from_a_wandb_export(sweep, wandb_env, capsys, tmp_path):
    csv = _wandb_export(sweep, tmp_path / "export.csv")
    done = publish.publish("toy", wandb_csv=csv, mode="offline", out=tmp_path / "out")
    run = logged(done.run_dir)
    assert run["run"].run_id == "analysis-toy" and run["config"]["source"] == "wandb-csv"
    markdown = cli_tables(capsys, "--wandb-csv", str(csv), "--sweep", "toy")
    assert {key_of(k) for k in run["tables"]} == {"1", "3a", "4", "5", "cost", "sweep-cost"}
    for name, cells in run["tables"].items():
        assert cells == markdown[key_of(name)], name
    assert (tmp_path / "out" / "plots" / "score_vs_cost.png").exists()


# -- the dashboard ----------------------------------------------------------------------------------------


def test_dashboard_spec_groups_and_one_panel_per_metric_without_network(sweep, no_network, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    frame, _ = publish.load_sweep("toy", runs=sweep["runs"], include_unfinished=True)
    spec = dashboard.build_spec(frame, "toy", entity="me")
    # grouped by the Hydra choices model and tuning, and by LoRA rank since these runs vary it; the other
    # choices the sweep's grid (sweeps/toy.yaml) varies are run-table columns
    assert spec.groupby == ["model", "tuning", "hp.rank"]
    assert spec.columns[:4] == ["model", "tuning", "vision", "data"]
    by_metric: dict[str, list] = {}
    for panel in spec.panels():
        for metric in panel.y:
            by_metric.setdefault(metric, []).append(panel)
    for metric in ("history:train/loss", "history:train/tokens_per_s", "history:train/peak_mem_gb",
                   "summary:eval/synthetic/beam1/overall", "summary:eval/llava_bench/beam1/overall",
                   "summary:finetune/gpu_hours_per_node", "summary:finetune/usd"):
        assert len([p for p in by_metric[metric] if p.kind in ("line", "bar")]) == 1, metric
    assert spec.benchmarks == {"llava_bench": [1], "synthetic": [1], "synthetic_text": [1]}
    [scatter] = [p for p in spec.panels() if p.kind == "scatter" and p.x == "summary:finetune/gpu_hours_per_node"]
    assert scatter.y == ["summary:eval/llava_bench/beam1/overall"]
    tables = sorted(p.y[0] for p in spec.panels() if p.kind == "table")
    assert tables == sorted(["tables/table_1", "tables/table_3a", "tables/table_4", "tables/table_5", "tables/cost",
                             "tables/sweep_cost"])  # the analysis run's tables

    workspace = dashboard.to_workspace(spec)
    runset = workspace.runset_settings
    assert [(g.section, g.name) for g in runset.groupby] == [("config", "model"), ("config", "tuning"),
                                                            ("config", "hp.rank")]
    assert "Group\") == 'toy'" in runset.filters and "JobType" in runset.filters
    assert [s.name for s in workspace.sections] == ["Training", "Scores", "Cost", "Analysis run"]
    assert sum(len(s.panels) for s in workspace.sections) == len(spec.panels())
    kinds = {type(p).__name__ for s in workspace.sections for p in s.panels}
    assert kinds == {"LinePlot", "BarPlot", "ScatterPlot", "WeavePanelSummaryTable", "MediaBrowser", "CustomChart",
                     "RunComparer"}

    # the command offline: writes the spec, says how to publish it, still no network
    assert dashboard.main(["--runs", str(sweep["runs"]), "--sweep", "toy"]) == 0
    said = capsys.readouterr().out
    path = sweep["runs"] / "toy" / "analysis" / "dashboard.json"
    assert f"--publish {path}" in said
    written = json.loads(path.read_text())
    assert dashboard.DashboardSpec.from_dict(written["spec"]) == dashboard.read_spec(path)
    assert written["spec"]["groupby"] == spec.groupby
    assert written["viewspec"]["spec"]["section"]["runSets"][0]["grouping"][0] == {"section": "config",
                                                                                   "name": "model.value"}
    before = path.read_text()
    assert dashboard.main(["--runs", str(sweep["runs"]), "--sweep", "toy", "--offline"]) == 0
    assert path.read_text() == before  # the same spec, panel ids included


class FakeViews:
    """W&B's view store behind the GraphQL calls of wandb-workspaces (upsertView, project.allViews)."""

    def __init__(self):
        self.views: dict[str, dict] = {}
        self.upserts: list[dict] = []

    def __call__(self, api, query, variables=None):
        variables = dict(variables or {})
        if "upsertView" in query:
            self.upserts.append(variables)
            view_id = variables.get("id") or f"V{len(self.views) + 1}"
            name = next((n for n, v in self.views.items() if v["id"] == view_id), variables["name"])
            self.views[name] = {"id": view_id, "displayName": variables["displayName"], "spec": variables["spec"]}
            return {"upsertView": {"view": {"id": view_id, "name": name}, "inserted": "id" not in variables}}
        name = variables["viewName"]
        edges = [{"node": self.views[name]}] if name in self.views else []
        return {"project": {"allViews": {"edges": edges}}}


def test_publishing_the_spec_twice_updates_one_workspace(sweep, tmp_path, monkeypatch, no_network, capsys):
    """Saving goes through wandb-workspaces' own save/from_url; only its GraphQL transport is faked."""
    import wandb
    from wandb_workspaces.workspaces import internal

    class FakeApi:
        default_entity = "me"

        class client:  # noqa: N801 - the attribute wandb-workspaces reads the app URL from
            app_url = "https://wandb.test"

    views = FakeViews()
    monkeypatch.setattr(wandb, "Api", FakeApi)
    monkeypatch.setattr(internal, "execute_graphql", views)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    path = tmp_path / "dashboard.json"
    assert dashboard.main(["--runs", str(sweep["runs"]), "--sweep", "toy", "--offline", "--out", str(path)]) == 0
    assert dashboard.read_spec(path).url is None
    for _ in range(2):
        assert dashboard.main(["--publish", str(path)]) == 0
    assert len(views.views) == 1 and len(views.upserts) == 2
    assert "id" not in views.upserts[0] and views.upserts[1]["id"] == "V1"
    assert views.upserts[0]["entityName"] == "me" and views.upserts[0]["displayName"] == "lmm sweep toy"
    url = dashboard.read_spec(path).url
    assert url.startswith("https://wandb.test/me/lmm?nw=")
    saved = json.loads(next(iter(views.views.values()))["spec"])
    assert [s["name"] for s in saved["section"]["panelBankConfig"]["sections"]] == \
        ["Training", "Scores", "Cost", "Analysis run"]
    assert "workspace saved: " + url in capsys.readouterr().out
