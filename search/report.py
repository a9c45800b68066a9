"""`python -m search.report SWEEP_DIR` or `python -m search.report search.storage=URL search.study_name=NAME`.

Writes a report folder (`out=DIR`; by default `report/` beside the sweep or study): `index.html`
(self-contained: plotly's JavaScript embedded, opens offline), one PNG per figure, the tables as CSV.
"""

from __future__ import annotations

import csv
import html
import statistics
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio
from optuna.trial import TrialState

from search import figures
from search.ablation import ablation_rows, load_results, setting_of, shared_overrides, write_csv
from search.cli import parse_options, run_main
from search.errors import ConfigError
from search.outdir import staged_output

Figure = tuple[str, str, go.Figure]  # (id, caption, figure)
OPTIONS = {"search.storage": None, "search.study_name": None, "out": None}


def parse_args(argv: list[str]) -> tuple[Path | None, dict[str, str]]:
    """A sweep folder (a bare argument) or the study options; `out=`."""
    options = {k: v for k, v in parse_options(argv, OPTIONS, bare="SWEEP_DIR").items() if v is not None}
    sweep = Path(options.pop("SWEEP_DIR")) if "SWEEP_DIR" in options else None
    if (sweep is None) == ("search.storage" not in options):
        raise ConfigError("give a sweep folder (multirun/DAY/TIME) or search.storage=URL, not both or neither")
    return sweep, options


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ---- grid ablations -------------------------------------------------------------------------------


def sweep_report(sweep: Path) -> tuple[str, list[Figure], dict[str, list[dict]], str]:
    """(title, figures, tables, summary HTML) of a Hydra sweep folder."""
    if not sweep.is_dir():
        raise ConfigError(f"{sweep}: no such sweep folder")
    by_job = load_results(sweep)
    if not by_job:
        raise ConfigError(f"{sweep}: no finished runs in it (no */results.json)")
    results = list(by_job.values())
    shared = shared_overrides(results)
    by_setting: dict[str, list[tuple[Path, dict]]] = {}
    for job_dir, result in by_job.items():
        by_setting.setdefault(setting_of(result, shared), []).append((job_dir, result))
    rows = []
    for setting, members in by_setting.items():
        accs = [r["metrics"]["test/acc"] * 100 for _, r in members]
        rows.append(
            {
                "setting": setting,
                "seeds": len(accs),
                "flops": members[0][1]["flops"],
                "mean": statistics.fmean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            }
        )
    edf = {
        s: ([(1 - r["metrics"]["val/acc_best"]) * 100 for _, r in m], [r["flops"] for _, r in m])
        for s, m in by_setting.items()
    }
    histories = {
        f"{s} seed={r['seed']}": _read_csv(d / "history.csv")
        for s, m in by_setting.items()
        for d, r in m
        if (d / "history.csv").is_file()
    }
    figs: list[Figure] = [
        ("ablation_bars", "The ablation table as bars, error bars over seeds.", figures.ablation_bars(rows)),
        ("accuracy_vs_flops", "Accuracy against FLOPs per setting.", figures.ablation_scatter(rows)),
        ("edf", "Error EDF per setting, and complexity-normalised.", figures.edf_figure(edf, "Error EDF per setting")),
    ]
    if histories:
        figs.append(("training_curves", "Training curves of every run.", figures.training_curves(histories)))
    gradflow = {
        s: _mean_gradflow([d / "gradflow.csv" for d, _ in m])
        for s, m in by_setting.items()
        if all((d / "gradflow.csv").is_file() for d, _ in m)
    }
    if gradflow:
        figs.append(("gradflow", "Gradient norms by depth (probe=gradflow).", figures.gradflow_figure(gradflow)))
    table = ablation_rows(results)
    summary = f"<p>Shared by every run: <code>{html.escape(' '.join(shared) or 'none')}</code></p>" + _html_table(table)
    return f"Ablation report: {sweep}", figs, {"ablation": table}, summary


def _mean_gradflow(paths: list[Path]) -> list[dict[str, Any]]:
    """Per block, in depth order: branch and skip gradient norms averaged over steps and runs."""
    rows = [r for p in paths for r in _read_csv(p)]
    blocks = sorted({(int(r["depth"]), r["block"]) for r in rows})
    return [
        {
            "block": name,
            **{
                k: statistics.fmean(float(r[k]) for r in rows if r["block"] == name)
                for k in ("branch_grad_norm", "skip_grad_norm")
            },
        }
        for _, name in blocks
    ]


# ---- studies --------------------------------------------------------------------------------------


def family(model: dict[str, Any]) -> str:
    """A readable family name: the block, with ResNeXt groups and SE when they are on."""
    name = model["block"] + (f" g{model['groups']}" if model.get("groups", 1) > 1 else "")
    return name + (" +SE" if model.get("se_reduction") else "")


def trained_view(trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    """An in-memory single-objective study (val/acc) of the trained trials, for optuna's plots."""
    view = optuna.create_study(direction="maximize")
    view.add_trials(
        [
            optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=t.values[0], user_attrs=t.user_attrs
            )
            for t in trials
        ]
    )
    return view


def study_report(options: dict[str, str]) -> tuple[str, list[Figure], dict[str, list[dict]], str]:
    """(title, figures, tables, summary HTML) of an Optuna study."""
    from search.select import choose, load_study, pareto_front, trained, trial_row

    study = load_study(options["search.storage"], options.get("search.study_name"))
    name = study.study_name
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise ConfigError(f"search.study_name={name}: the study has no trials yet; nothing to report")
    done = trained(study)
    budget = study.user_attrs.get("budget_flops")
    if not done:
        over = sum(bool(t.user_attrs.get("over_budget")) for t in trials)
        raise ConfigError(
            f"search.study_name={name}: no trained trial to plot ({over} of {len(trials)} candidates "
            f"were over the budget of {budget:,} MACs)"
            if budget
            else f"search.study_name={name}: no trained trial to plot yet"
        )
    infeasible = [t for t in trials if t.user_attrs.get("over_budget")]
    pruned = [t for t in trials if t.user_attrs.get("trained") and t.state == TrialState.PRUNED and t.values]
    front = pareto_front(done)
    try:
        selected = choose(done, budget, str(budget))
    except ConfigError:
        selected = None

    def point(t):
        return {
            "flops": t.user_attrs["flops"],
            "acc": t.values[0] * 100 if t.values else 0.0,
            "label": f"trial {t.number}: {' '.join(t.user_attrs.get('overrides', []))}",
        }

    view = trained_view(done)
    figs: list[Figure] = [
        (
            "accuracy_vs_flops",
            "Trained candidates, Pareto front, over-budget candidates, budget and selection.",
            figures.accuracy_vs_flops(
                [point(t) for t in done],
                [point(t) for t in pruned],
                [point(t) for t in infeasible],
                [point(t) for t in front],
                budget,
                point(selected) if selected else None,
            ),
        ),
        (
            "history",
            "Optimisation history (val/acc of trained trials).",
            optuna.visualization.plot_optimization_history(view, target_name="val/acc"),
        ),
        (
            "parallel_coordinates",
            "Parallel coordinates of the searched parameters.",
            optuna.visualization.plot_parallel_coordinate(view, target_name="val/acc"),
        ),
        (
            "slices",
            "Accuracy against each searched parameter (per-stage expansion, depth...).",
            optuna.visualization.plot_slice(view, target_name="val/acc"),
        ),
    ]
    if len(done) >= 3 and view.best_trial.params:
        figs.insert(
            3,
            (
                "importances",
                "Parameter importances (fANOVA) for val/acc.",
                optuna.visualization.plot_param_importances(view, target_name="val/acc"),
            ),
        )
    errors = [(1 - t.values[0]) * 100 for t in done]
    groups: dict[str, tuple[list, list]] = {}
    for t, error in zip(done, errors, strict=True):
        errs, flops = groups.setdefault(family(t.user_attrs["model"]), ([], []))
        errs.append(error)
        flops.append(t.user_attrs["flops"])
    figs.append(
        (
            "edf",
            "Error EDF per block family, and complexity-normalised.",
            figures.edf_figure(groups, "Error EDF of the trained models, per block family"),
        )
    )
    numeric = sorted({k for t in done for k, v in t.params.items() if isinstance(v, (int, float))})
    complete = [k for k in numeric if all(k in t.params for t in done)]
    values = {k: [t.params[k] for t in done] for k in complete}
    ranges = figures.good_ranges(values, errors) if values else []
    if values:
        figs.append(
            (
                "good_ranges",
                "Ranges where good models lie (bootstrap).",
                figures.good_ranges_figure(values, errors, ranges),
            )
        )
    rows = [trial_row(t) for t in trials]
    tables = {"trials": rows, "pareto": [r for r in rows if r["trial"] in {t.number for t in front}]}
    if ranges:
        tables["good_ranges"] = ranges
    chosen = (
        f"trial {selected.number} ({selected.user_attrs['flops']:,} MACs, val/acc {selected.values[0]:.4f})"
        if selected
        else "none fits the budget"
    )
    summary = (
        f"<p>{len(done)} trained trials complete, {len(pruned)} pruned, {len(infeasible)} over-budget candidates "
        "(never trained); "
        f"budget: {f'{budget:,} MACs' if budget else 'none'}; selected: {chosen}.</p>"
    )
    return f"Search report: study {name}", figs, tables, summary


# ---- output ---------------------------------------------------------------------------------------


def _html_table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(f'{v:,}' if isinstance(v, int) else str(v))}</td>" for v in row.values())
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script>
  // Counted by the report's tests (and visible to anyone opening the page): JavaScript errors.
  window.addEventListener("error", function () {{
    var root = document.documentElement;
    root.dataset.jsErrors = String(Number(root.dataset.jsErrors || 0) + 1);
  }});
</script>
<style>
  body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; }}
  table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
  figure {{ margin: 2em 0; }} figcaption {{ color: #555; }}
</style></head>
<body data-figures="{count}">
<h1>{title}</h1>
<p>FLOPs are multiply-accumulates (MACs) of convolutions and linear layers, at the data's resolution.</p>
{summary}
{body}
</body></html>
"""


def write_report(out: Path, title: str, figs: list[Figure], tables: dict[str, list[dict]], summary: str) -> None:
    """index.html, one PNG per figure and the tables as CSV, all or nothing."""
    with staged_output(out, marker="index.html") as staging:
        blocks = []
        for index, (fig_id, caption, fig) in enumerate(figs):
            div = fig.to_html(
                full_html=False,
                include_plotlyjs="inline" if index == 0 else False,
                div_id=f"fig-{fig_id}",
                default_width="100%",
                default_height="480px",
            )
            blocks.append(
                f'<figure id="{fig_id}">{div}<figcaption>{html.escape(caption)} '
                f'<a href="{fig_id}.png">PNG</a></figcaption></figure>'
            )
        page = PAGE.format(title=html.escape(title), count=len(figs), summary=summary, body="\n".join(blocks))
        (staging / "index.html").write_text(page)
        try:
            pio.write_images(
                [f for _, _, f in figs], [staging / f"{i}.png" for i, _, _ in figs], width=1100, height=500
            )
        except Exception as error:  # kaleido drives a headless Chromium
            raise ConfigError(
                f"PNG export failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                "it needs Chromium: apt-get install chromium"
            ) from None
        for name, rows in tables.items():
            if rows:
                write_csv(staging / f"{name}.csv", rows)


def default_out(sweep: Path | None, options: dict[str, str], study_title: str) -> Path:
    """`report/` beside the sweep, beside a SQLite study's database, or under runs/STUDY/."""
    if "out" in options:
        return Path(options["out"])
    if sweep is not None:
        return sweep / "report"
    url = options["search.storage"]
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).parent / "report"
    return Path("runs") / study_title.rsplit(" ", 1)[-1] / "report"


def run(argv: list[str]) -> str:
    """Build the report; returns what to print (raises ConfigError on bad input)."""
    sweep, options = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    title, figs, tables, summary = sweep_report(sweep) if sweep else study_report(options)
    out = default_out(sweep, options, title)
    write_report(out, title, figs, tables, summary)
    return f"Wrote {out / 'index.html'} ({len(figs)} figures: {', '.join(i for i, _, _ in figs)}), PNGs and CSV tables"


def main() -> None:
    """Entry point: one line on success, or one error line on stderr with exit code 2."""
    run_main(run)


if __name__ == "__main__":
    main()
