"""Plotly figures of reports. FLOPs are multiply-accumulates (MACs) on every axis that shows them.

The design-space figures follow Radosavovic et al. 2019 ("On Network Design Spaces for Visual
Recognition") and 2020 ("Designing Network Design Spaces", pycls): error EDFs, complexity-normalised
EDFs, and bootstrapped ranges of good parameter values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

FLOPS_AXIS = "FLOPs (multiply-accumulates)"
ERROR_AXIS = "val top-1 error (%)"


def _edf(errors: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step points of the weighted EDF, starting from 0 at the lowest error."""
    order = np.argsort(errors)
    x, y = errors[order], np.cumsum(weights[order]) / weights.sum()
    return np.concatenate([x[:1], x]), np.concatenate([[0.0], y])


def complexity_weights(groups: Mapping[str, tuple[np.ndarray, np.ndarray]], bins: int = 8) -> dict[str, np.ndarray]:
    """Per-model weights that give every group the same FLOP distribution (uniform over the log-FLOP
    bins all groups share), so a group cannot look better just by holding bigger models."""
    all_flops = np.concatenate([np.log(f) for _, f in groups.values()])
    edges = np.unique(np.quantile(all_flops, np.linspace(0, 1, bins + 1)))
    binned = {
        name: np.clip(np.searchsorted(edges, np.log(f), side="right") - 1, 0, len(edges) - 2)
        for name, (_, f) in groups.items()
    }
    shared = set.intersection(*(set(b.tolist()) for b in binned.values()))
    weights = {}
    for name, b in binned.items():
        counts = np.bincount(b, minlength=len(edges))
        weights[name] = np.array([1.0 / counts[i] if i in shared else 0.0 for i in b])
    return weights


def edf_figure(groups: Mapping[str, tuple[Sequence[float], Sequence[int]]], title: str) -> go.Figure:
    """Error EDF per group, and beside it the complexity-normalised EDF; groups map to (errors %, FLOPs)."""
    arrays = {name: (np.asarray(e, float), np.asarray(f, float)) for name, (e, f) in groups.items()}
    normalised = complexity_weights(arrays)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("error EDF", "complexity-normalised error EDF"))
    for index, (name, (errors, _)) in enumerate(arrays.items()):
        color = _color(index)
        for col, weights in ((1, np.ones_like(errors)), (2, normalised[name])):
            if weights.sum() == 0:
                continue
            x, y = _edf(errors, weights)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    line_shape="hv",
                    name=f"{name} (n={len(errors)})",
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": color},
                ),
                row=1,
                col=col,
            )
    if not any(w.sum() for w in normalised.values()):
        fig.add_annotation(
            text="the groups share no FLOP range:<br>train more models to compare them",
            xref="paper",
            yref="paper",
            x=0.775,
            y=0.5,
            showarrow=False,
        )
    every = np.concatenate([e for e, _ in arrays.values()])
    pad = max(0.5, 0.05 * float(every.max() - every.min()))
    fig.update_xaxes(title_text=ERROR_AXIS, range=[float(every.min()) - pad, float(every.max()) + pad])
    fig.update_yaxes(title_text="fraction of models with lower error", range=[0, 1.02])
    fig.update_layout(title=title)
    return fig


def good_ranges(
    values: Mapping[str, Sequence[float]], errors: Sequence[float], *, draws: int = 1000, seed: int = 0
) -> list[dict[str, float | str]]:
    """Per parameter, where the best model lies: the 2.5-97.5% interval of the best model's value
    over bootstrap resamples of the models (pycls' "good range")."""
    rng = np.random.default_rng(seed)
    errors = np.asarray(errors, float)
    rows = []
    for name, column in values.items():
        column = np.asarray(column, float)
        picks = rng.integers(0, len(errors), size=(draws, len(errors)))
        best = column[picks[np.arange(draws), errors[picks].argmin(axis=1)]]
        low, median, high = np.percentile(best, [2.5, 50, 97.5])
        rows.append({"parameter": name, "low": float(low), "median": float(median), "high": float(high)})
    return rows


def good_ranges_figure(
    values: Mapping[str, Sequence[float]], errors: Sequence[float], ranges: list[dict[str, float | str]]
) -> go.Figure:
    """Error against each parameter, with its bootstrapped good range shaded."""
    names = list(values)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    for col, (name, band) in enumerate(zip(names, ranges, strict=True), 1):
        fig.add_trace(
            go.Scatter(
                x=list(values[name]),
                y=list(errors),
                mode="markers",
                name=name,
                showlegend=False,
                marker={"color": _color(0), "opacity": 0.7},
            ),
            row=1,
            col=col,
        )
        fig.add_vrect(x0=band["low"], x1=band["high"], fillcolor="green", opacity=0.15, line_width=0, row=1, col=col)
        fig.add_vline(x=band["median"], line_color="green", line_dash="dot", row=1, col=col)
        fig.update_xaxes(title_text=name, row=1, col=col)
    fig.update_yaxes(title_text=ERROR_AXIS, row=1, col=1)
    fig.update_layout(title="Where good models lie (shaded: 95% bootstrap range of the best model's value)")
    return fig


def accuracy_vs_flops(
    feasible: Sequence[dict],
    pruned: Sequence[dict],
    infeasible: Sequence[dict],
    front: Sequence[dict],
    budget: int | None,
    selected: dict | None,
) -> go.Figure:
    """Trained candidates (pruned ones at their last val/acc), the Pareto front, over-budget candidates
    (never trained), the budget and the selected model."""
    fig = go.Figure()
    for points, name, symbol in ((feasible, "trained", "circle"), (pruned, "pruned (last val/acc)", "circle-open")):
        fig.add_trace(
            go.Scatter(
                x=[p["flops"] for p in points],
                y=[p["acc"] for p in points],
                mode="markers",
                name=name,
                text=[p["label"] for p in points],
                marker={"color": _color(0), "symbol": symbol},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[p["flops"] for p in front],
            y=[p["acc"] for p in front],
            mode="lines+markers",
            name="Pareto front",
            line={"color": _color(1)},
        )
    )
    if infeasible:
        fig.add_trace(
            go.Scatter(
                x=[p["flops"] for p in infeasible],
                y=[0] * len(infeasible),
                mode="markers",
                name="over budget (not trained)",
                text=[p["label"] for p in infeasible],
                marker={"symbol": "x", "color": "grey"},
            )
        )
    if selected:
        fig.add_trace(
            go.Scatter(
                x=[selected["flops"]],
                y=[selected["acc"]],
                mode="markers",
                name="selected",
                marker={"symbol": "star", "size": 16, "color": _color(3)},
            )
        )
    if budget:
        fig.add_vline(x=budget, line_dash="dash", annotation_text=f"budget {budget:,}")
    fig.update_layout(
        title="Accuracy against FLOPs", xaxis_title=FLOPS_AXIS, yaxis_title="val top-1 (%)", xaxis_type="log"
    )
    return fig


def ablation_bars(rows: Sequence[dict]) -> go.Figure:
    """Test top-1 per setting, mean with the std over seeds as error bars."""
    fig = go.Figure(
        go.Bar(
            x=[r["setting"] for r in rows],
            y=[r["mean"] for r in rows],
            error_y={"type": "data", "array": [r["std"] for r in rows]},
            text=[f"n={r['seeds']}" for r in rows],
            marker_color=_color(0),
        )
    )
    fig.update_layout(
        title="Test top-1 per setting (error bars: std over seeds)", xaxis_title="setting", yaxis_title="test top-1 (%)"
    )
    return fig


def ablation_scatter(rows: Sequence[dict]) -> go.Figure:
    """Test top-1 against FLOPs, one point per setting, with std over seeds."""
    fig = go.Figure()
    for i, r in enumerate(rows):
        fig.add_trace(
            go.Scatter(
                x=[r["flops"]],
                y=[r["mean"]],
                error_y={"type": "data", "array": [r["std"]]},
                mode="markers+text",
                text=[r["setting"]],
                textposition="top center",
                name=r["setting"],
                marker={"size": 12, "color": _color(i)},
            )
        )
    fig.update_layout(
        title="Test top-1 against FLOPs per setting",
        xaxis_title=FLOPS_AXIS,
        yaxis_title="test top-1 (%)",
        xaxis_type="log",
    )
    return fig


def training_curves(histories: Mapping[str, Sequence[dict]]) -> go.Figure:
    """Validation top-1 and training loss per epoch for every run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("val top-1 (%)", "train loss"))
    for i, (name, rows) in enumerate(histories.items()):
        epochs = [int(r["epoch"]) + 1 for r in rows]
        for col, key, scale in ((1, "val/acc", 100), (2, "train/loss", 1)):
            ys = [float(r[key]) * scale if r.get(key) not in (None, "") else None for r in rows]
            _add_paired_line(fig, name, i, col, epochs, ys)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Training curves")
    return fig


def gradflow_figure(series: Mapping[str, Sequence[dict]]) -> go.Figure:
    """Mean gradient norms per block, by depth: through the residual branch and through the skip."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("through the residual branch", "through the skip"))
    for i, (name, rows) in enumerate(series.items()):
        for col, key in ((1, "branch_grad_norm"), (2, "skip_grad_norm")):
            _add_paired_line(fig, name, i, col, [r["block"] for r in rows], [r[key] for r in rows])
    fig.update_xaxes(title_text="block (input to output)")
    fig.update_yaxes(title_text="mean L2 norm of dL/d(block input)", type="log")
    fig.update_layout(title="Gradient flow by depth")
    return fig


def _add_paired_line(fig: go.Figure, name: str, index: int, col: int, x: Sequence, y: Sequence) -> None:
    """One series in one of two side-by-side panels; its legend entry (shown once) toggles both."""
    trace = go.Scatter(
        x=x, y=y, mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1, line={"color": _color(index)}
    )
    fig.add_trace(trace, row=1, col=col)


def _color(index: int) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    return palette[index % len(palette)]
