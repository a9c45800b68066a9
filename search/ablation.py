"""The ablation table: one row per swept setting, seeds aggregated as mean ± std.

Printed when a sweep ends (a Hydra callback) and written beside it as `ablation.csv` and `ablation.md`.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from blocks.table import markdown_table

# val/acc_best: the epoch whose checkpoint the test evaluates, so both columns describe the same weights
METRICS = {"val top-1 (%)": "val/acc_best", "test top-1 (%)": "test/acc"}


def load_results(sweep_dir: Path) -> dict[Path, dict[str, Any]]:
    """Every job's `results.json` under `sweep_dir` by job folder, in job order."""
    paths = sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    return {p.parent: json.loads(p.read_text()) for p in paths}


def shared_overrides(results: list[dict[str, Any]]) -> list[str]:
    """Overrides every job has (the sweep's fixed part), in command-line order."""
    common = set.intersection(*(set(r["overrides"]) for r in results))
    return [o for o in results[0]["overrides"] if o in common]


def setting_of(result: dict[str, Any], shared: list[str]) -> str:
    """The swept setting a job belongs to: its overrides other than the shared ones and the seed."""
    varying = [o for o in result["overrides"] if o not in shared and not o.startswith("seed=")]
    return " ".join(varying) or "defaults"


def mean_std(values: list[float], scale: float = 1.0) -> str:
    """'mean ± std' over seeds (sample std); the mean alone for one seed."""
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values) * scale:.2f}"


def ablation_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting: seeds, params, FLOPs (MACs), accuracies and wall time."""
    groups: dict[str, list[dict[str, Any]]] = {}
    shared = shared_overrides(results)
    for result in results:
        groups.setdefault(setting_of(result, shared), []).append(result)
    rows = []
    for setting, runs in groups.items():
        row = {"setting": setting, "seeds": len(runs), "params": runs[0]["params"], "FLOPs (MACs)": runs[0]["flops"]}
        for column, metric in METRICS.items():
            row[column] = mean_std([r["metrics"][metric] for r in runs], scale=100)
        row["wall (s)"] = mean_std([r["wall_s"] for r in runs])
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows` (numbers right-aligned, thousands separated)."""
    cells = [[f"{value:,}" if isinstance(value, int) else str(value) for value in row.values()] for row in rows]
    return markdown_table(list(rows[0]), cells)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """`rows` as CSV, the first row's keys as header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_ablation(sweep_dir: Path) -> str | None:
    """Write `ablation.csv` and `ablation.md` in `sweep_dir`; return the Markdown (None if no results)."""
    results = list(load_results(sweep_dir).values())
    if not results:
        return None
    rows = ablation_rows(results)
    write_csv(sweep_dir / "ablation.csv", rows)
    shared = " ".join(shared_overrides(results)) or "none"
    table = (
        f"Shared by every run: {shared}\n{markdown(rows)}\n"
        "FLOPs are multiply-accumulates at the data's resolution; accuracies are mean ± std over seeds, "
        "both of the best val epoch's checkpoint."
    )
    (sweep_dir / "ablation.md").write_text(table + "\n")
    return table


class AblationTable(Callback):
    """Hydra callback: when a sweep ends, print and save its ablation table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = write_ablation(sweep_dir)
        if table:
            print(f"\nAblation table ({sweep_dir}):\n{table}")
