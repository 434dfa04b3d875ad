"""lmm: Hydra-configured sweeps of two-stage LLaVA training, evaluation and analysis.

The package root holds the checkout's two data folders every layer reads, and imports nothing of ours.
"""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_DIR / "conf"  # the Hydra config groups
# The paper's reported numbers, one row per number: the only copy (analysis.reference and the planner's
# Table 4 comparison read it).
PAPER_TABLES_CSV = REPO_DIR / "analysis" / "reference" / "paper_tables.csv"
