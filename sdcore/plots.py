"""Pure figure builders: data -> plotly Figure, for the dashboard and the CLI (`analyze --figures`: sdcore.figures).

Colours are fixed per round everywhere: the teacher (round 0) in a warm red-orange, students in
a family of blues/teals indexed by their round, so "student 2" is the same colour on every page.
BYOT exits use a sequential palette from shallow (light) to deepest (dark).
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import plotly.graph_objects as go

from sdcore import terms
from sdcore.config import ConfigError

TEACHER_COLOR = "#d9480f"
STUDENT_COLORS = ("#1c7ed6", "#0ca678", "#7048e8", "#1098ad", "#4263eb", "#2b8a3e", "#862e9c", "#0b7285")
EXIT_COLORS = ("#a5d8ff", "#4dabf7", "#1c7ed6", "#0b3d73")  # light (shallow) -> dark (deepest)
ENSEMBLE_COLOR = "#e64980"  # pink: apart from the teacher's red-orange and the students' blues/greens
FONT = dict(size=15)
# Grey at a quarter opacity: a faint grid on a white plot area and on Streamlit's dark one alike.
GRID = "rgba(128, 128, 128, 0.25)"
# The legend sits above the plot area, clear of the panel titles (they sit at y=1 of the plot area).
# No template and no background colour here: applying a template is too slow for a once-a-second redraw
# (BENCHMARKS.md, "Dashboard: page render with 10 finished runs", renders without one), and the dashboard's theme
# (light or dark) paints the backgrounds and the text
# through Streamlit's own template; figure_html adds plotly_white for downloads.
_LAYOUT = dict(font=FONT, hovermode="x unified", margin=dict(l=60, r=20, t=100, b=50),
               legend=dict(orientation="h", yanchor="bottom", y=1.12, xanchor="left", x=0))


BASELINE_COLORS = ("#f59f00", "#495057", "#c2255c", "#5c940d")  # other runs' models shown next to a run's rounds
# One colour and one marker symbol per compared configuration (Compare, Robustness): apart in hue and in
# shape, so configurations stay apart in greyscale, for colour-blind readers and on a washed-out projector.
# Orange comes last: it reads as "the teacher" everywhere else.
CONFIG_COLORS = ("#1c7ed6", "#2b8a3e", "#862e9c", "#f59f00", "#c2255c", "#0c8599", "#5c940d", "#e8590c")
CONFIG_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star", "triangle-down", "hexagon")


def config_style(i: int) -> tuple[str, str]:
    """Configuration i's (colour, marker symbol); past 8 the colours repeat with a shifted symbol."""
    n = len(CONFIG_COLORS)
    return CONFIG_COLORS[i % n], CONFIG_SYMBOLS[(i + i // n) % len(CONFIG_SYMBOLS)]


def round_name(k: int | str, method: str = "kd") -> str:
    """A round's display name; a str key (a baseline from another run, e.g. a SAM teacher) is its own name."""
    if isinstance(k, str):
        return k
    try:
        used = terms.terms_of(method)
    except ConfigError:
        used = ()
    if used and terms.uses(method, "peers"):
        return f"{terms.label(method)} peer 1"
    if used and terms.is_multi_round(method):
        return "teacher (round 0)" if k == 0 else f"student {k}"
    return f"{terms.label(method)} model" if used else f"model ({terms.label(method)})"


def round_color(k: int | str) -> str:
    if isinstance(k, str):  # a baseline: a stable colour per name
        return BASELINE_COLORS[sum(map(ord, k)) % len(BASELINE_COLORS)]
    return TEACHER_COLOR if k == 0 else STUDENT_COLORS[(k - 1) % len(STUDENT_COLORS)]


def _ordered(d: dict) -> list[tuple[Any, Any]]:
    """Items with round keys first (0, 1, ...), then baseline (str) keys in insertion order."""
    return sorted(d.items(), key=lambda kv: (1, 0) if isinstance(kv[0], str) else (0, kv[0]))


def exit_color(i: int, n: int) -> str:
    """Exit i of n: light (shallow) to dark (deepest)."""
    palette = EXIT_COLORS[-n:] if n <= len(EXIT_COLORS) else EXIT_COLORS
    return palette[min(i, len(palette) - 1)]


def exit_name(i: int, n: int) -> str:
    return f"exit {i + 1}" + (" (deepest)" if i == n - 1 else "")


def _by_round(metrics: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for m in metrics:
        out.setdefault(m["round"], []).append(m)
    return out


# per round: overlapping rounds stay visible
ROUND_DASHES = ("solid", "dash", "dashdot", "longdash", "longdashdot", "dot")
ROUND_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star-triangle-up", "pentagon")


def round_style(k: int | str) -> tuple[str, str]:
    """(line dash, marker symbol) of a round: colour alone does not separate two curves drawn on top of each other."""
    i = 0 if isinstance(k, str) else k
    return ROUND_DASHES[i % len(ROUND_DASHES)], ROUND_SYMBOLS[i % len(ROUND_SYMBOLS)]


def _line(x, y, name: str, color: str, *, panel: int, width: float = 3, dash: str = "solid",
          legend: bool = True, group: str | None = None, symbol: str | None = None) -> dict[str, Any]:
    """A scatter trace as a plain dict on panel 1 (left) or 2 (right); validated once by go.Figure."""
    markers = symbol is not None or len(x) == 1
    return dict(type="scatter", mode="lines+markers" if markers else "lines", x=list(x), y=list(y), name=name,
                legendgroup=group or name, showlegend=legend, line=dict(color=color, width=width, dash=dash),
                marker=dict(symbol=symbol or "circle", size=7, color=color),
                xaxis="x" if panel == 1 else "x2", yaxis="y" if panel == 1 else "y2")


# What the loss panel can plot per epoch (metrics.jsonl keys): (menu label, axis title). The objective is what
# each round minimizes, so it differs between a teacher (CE) and its students (alpha*CE + (1-alpha)*tau^2*KL);
# the cross-entropies are the same quantity for every round.
LOSS_QUANTITIES = {
    "train_ce": ("cross-entropy vs the training labels", "cross-entropy vs training labels (nats)"),
    "train_ce_clean": ("cross-entropy vs the clean labels", "cross-entropy vs clean labels (nats)"),
    "train_loss": ("training objective (differs per round)", "training objective (nats), per round's own loss"),
}


def loss_quantities(metrics: Sequence[dict[str, Any]]) -> list[str]:
    """The LOSS_QUANTITIES keys every record of ``metrics`` has (runs logged before train_ce have the objective
    only)."""
    return [q for q in LOSS_QUANTITIES if metrics and all(q in m for m in metrics)]


def part_name(key: str) -> str:
    """The legend entry of a train_parts key (sdcore.methods.single: each term's weighted share of the
    objective, named in its registry entry's ``logs``); an unknown key is shown as it is."""
    return next((f"· {t.logs[key]}" for t in terms.TERMS.values() if key in t.logs), key)
PART_COLORS = ("#1c7ed6", "#e8590c", "#2b8a3e", "#862e9c", "#c92a2a")


def training_curves(metrics: Sequence[dict[str, Any]], *, method: str = "kd", title: str = "",
                    loss: str = "train_ce", kept: dict[int, int] | None = None) -> go.Figure:
    """A training loss (left) and test/validation accuracy (right) per epoch, every round on the same axes.

    metrics: metrics.jsonl records. ``loss``: a LOSS_QUANTITIES key, plotted for every round (records
    without it fall back to the objective, and the axis says so). ``kept``: round -> the epoch whose model
    the round kept; marked with a star on both panels, so the table's kept accuracy is found on the curve.
    Each round has its colour, dash and marker; validation is thin and dotted in the round's colour.
    Runs with exits (records with test_acc_exits) show every exit's test accuracy instead of rounds, and
    the objective's parts (train_parts: each term's weighted share, they add up to it) dotted beside it.
    Built from dicts in one go (no make_subplots, no per-trace validation): the Live page redraws
    it every second while training runs in the same process, so its cost is taken from training.
    """
    traces: list[dict[str, Any]] = []
    rounds = _by_round(metrics)
    if loss not in LOSS_QUANTITIES:
        raise ValueError(f"loss must be one of {', '.join(LOSS_QUANTITIES)}, got {loss!r}")
    if loss not in loss_quantities(metrics):
        loss = "train_loss"
    byot = any("test_acc_exits" in m for m in metrics)
    if byot:
        ms = rounds.get(0, [])
        ep = [m["epoch"] for m in ms]
        traces.append(_line(ep, [m["train_loss"] for m in ms], "training objective (all terms)", "#495057", panel=1))
        parts = list(ms[0].get("train_parts", {})) if ms else []
        traces += [_line(ep, [m.get("train_parts", {}).get(p) for m in ms], part_name(p),
                         PART_COLORS[i % len(PART_COLORS)], panel=1, width=1.5, dash="dot")
                   for i, p in enumerate(parts)]
        n = len(ms[0]["test_acc_exits"]) if ms else 0
        traces += [_line(ep, [m["test_acc_exits"][i] for m in ms], exit_name(i, n), exit_color(i, n), panel=2)
                   for i in range(n)]
        if ms and "test_acc_ensemble" in ms[0]:
            traces.append(_line(ep, [m["test_acc_ensemble"] for m in ms], "ensemble of exits", ENSEMBLE_COLOR,
                                panel=2, dash="dash"))
    peers = not byot and any("test_acc_peers" in m for m in metrics)
    if peers:  # deep mutual learning: every peer's test accuracy and their ensemble
        ms = rounds.get(0, [])
        ep = [m["epoch"] for m in ms]
        traces.append(_line(ep, [m["train_loss"] for m in ms], "training loss (all peers)", "#495057", panel=1))
        n = len(ms[0]["test_acc_peers"]) if ms else 0
        traces += [_line(ep, [m["test_acc_peers"][i] for m in ms], f"peer {i + 1}",
                         STUDENT_COLORS[i % len(STUDENT_COLORS)], panel=2) for i in range(n)]
        traces.append(_line(ep, [m["test_acc_ensemble"] for m in ms], "ensemble of peers", ENSEMBLE_COLOR,
                            panel=2, dash="dash"))
    marks: list[tuple[int, float, float, str, str]] = []  # (epoch, loss, test acc, colour, name) per kept epoch
    for k, ms in sorted(rounds.items()) if not (byot or peers) else ():
        ep = [m["epoch"] for m in ms]
        color, name = round_color(k), round_name(k, method)
        dash, symbol = round_style(k)
        traces.append(_line(ep, [m[loss] for m in ms], name, color, panel=1, legend=False, dash=dash, symbol=symbol))
        traces.append(_line(ep, [m["test_acc"] for m in ms], name, color, panel=2, dash=dash, symbol=symbol))
        if ms and "val_acc" in ms[0]:
            traces.append(_line(ep, [m["val_acc"] for m in ms], f"{name}, validation", color, panel=2, width=1.5,
                                dash="dot", legend=False, group=name))
        at = next((m for m in ms if kept and m["epoch"] == kept.get(k)), None)
        if at is not None:
            marks.append((at["epoch"], at[loss], at["test_acc"], color, name))
    for i, (e, lv, acc, color, name) in enumerate(marks):
        star = dict(type="scatter", mode="markers", x=[e], name="kept epoch (the model the table reports)",
                    legendgroup="kept", showlegend=i == 0, hoverinfo="text",
                    marker=dict(symbol="star", size=18, color=color, line=dict(color="black", width=1)))
        traces.append({**star, "y": [lv], "xaxis": "x", "yaxis": "y",
                       "hovertext": f"{name}: kept epoch {e}, {LOSS_QUANTITIES[loss][0]} {lv:.3f}"})
        traces.append({**star, "y": [acc], "showlegend": False, "xaxis": "x2", "yaxis": "y2",
                       "hovertext": f"{name}: kept epoch {e}, test accuracy {acc:.2f}%"})
    few = max((m["epoch"] for m in metrics), default=0) <= 10
    axis = dict(title=dict(text="epoch"), dtick=1 if few else None, showgrid=True, gridcolor=GRID, zeroline=False)
    panel_title = dict(xref="paper", yref="paper", y=1.0, yanchor="bottom", showarrow=False, font=dict(size=16))
    loss_axis = "training objective (nats)" if byot or peers else LOSS_QUANTITIES[loss][1]
    layout = dict(
        **_LAYOUT, height=470, title=dict(text=title) if title else None,
        xaxis=dict(domain=[0.0, 0.46], **axis), xaxis2=dict(domain=[0.54, 1.0], anchor="y2", **axis),
        yaxis=dict(title=dict(text=loss_axis), gridcolor=GRID),
        yaxis2=dict(anchor="x2", gridcolor=GRID,
                    title=dict(text="test accuracy (%)" + ("" if byot or peers else " — dotted: validation"))),
        annotations=[dict(text="training loss" if byot or peers else LOSS_QUANTITIES[loss][0], x=0.23,
                          xanchor="center", **panel_title),
                     dict(text="accuracy", x=0.77, xanchor="center", **panel_title)])
    return go.Figure(data=traces, layout=layout)


def sharpness_curves(metrics: Sequence[dict[str, Any]], *, method: str = "kd",
                     kept: dict[int, int] | None = None) -> go.Figure | None:
    """λ_max of the training loss per epoch (records' ``sharpness``, logged with track_sharpness; left) beside
    test accuracy (right), every round with its colour, dash and marker, kept epochs starred; None when no
    record has it. A teacher that memorizes flipped labels sharpens while its accuracy sags."""
    rounds = {k: [m for m in ms if "sharpness" in m] for k, ms in _by_round(metrics).items()}
    rounds = {k: ms for k, ms in rounds.items() if ms}
    if not rounds:
        return None
    traces = []
    for k, ms in sorted(rounds.items()):
        ep = [m["epoch"] for m in ms]
        dash, symbol = round_style(k)
        name, color = round_name(k, method), round_color(k)
        traces.append(_line(ep, [m["sharpness"] for m in ms], name, color, panel=1, dash=dash, symbol=symbol))
        traces.append(_line(ep, [m["test_acc"] for m in ms], name, color, panel=2, dash=dash, symbol=symbol,
                            legend=False))
        at = next((m for m in ms if kept and m["epoch"] == kept.get(k)), None)
        if at is not None:
            star = dict(type="scatter", mode="markers", x=[at["epoch"]], name="kept epoch", legendgroup="kept",
                        hoverinfo="text", marker=dict(symbol="star", size=18, color=color,
                                                      line=dict(color="black", width=1)))
            traces.append({**star, "y": [at["sharpness"]], "showlegend": k == min(rounds),
                           "hovertext": f"{name}: kept epoch {at['epoch']}, λ_max {at['sharpness']:.3g}"})
            traces.append({**star, "y": [at["test_acc"]], "showlegend": False, "xaxis": "x2", "yaxis": "y2",
                           "hovertext": f"{name}: kept epoch {at['epoch']}, test accuracy {at['test_acc']:.2f}%"})
    few = max(m["epoch"] for ms in rounds.values() for m in ms) <= 10
    axis = dict(title=dict(text="epoch"), dtick=1 if few else None, gridcolor=GRID, zeroline=False)
    layout = dict(**_LAYOUT, height=420,
                  xaxis=dict(domain=[0.0, 0.46], **axis), xaxis2=dict(domain=[0.54, 1.0], anchor="y2", **axis),
                  yaxis=dict(title=dict(text="λ_max of the training loss"), gridcolor=GRID, rangemode="tozero"),
                  yaxis2=dict(anchor="x2", title=dict(text="test accuracy (%)"), gridcolor=GRID))
    return go.Figure(data=traces, layout=layout)


def accuracy_by_round(rows: Sequence[Any]) -> go.Figure:
    """Mean ± std test accuracy per round for each compared config (CompareRow-like objects): each config
    in its own colour and marker symbol (``config_style``), one legend entry each; the x axis names the round."""
    fig = go.Figure()
    for i, row in enumerate(rows):
        ks = [r.round for r in row.rounds]
        color, symbol = config_style(i)
        fig.add_trace(go.Scatter(
            x=[round_name(k, row.method) for k in ks], y=[r.mean for r in row.rounds],
            error_y=dict(type="data", array=[r.std for r in row.rounds], visible=True, color=color),
            mode="lines+markers", name=f"{row.label} (n={row.rounds[0].n})" if row.rounds else row.label,
            marker=dict(size=13, color=color, symbol=symbol, line=dict(width=1, color="white")),
            line=dict(width=2.5, color=color),
            hovertemplate="%{x}: %{y:.2f}% ± %{error_y.array:.2f}<extra>%{fullData.name}</extra>"))
    # The legend below the plot, one config a line: config labels are long, and above the plot they would wrap.
    fig.update_layout(**{**_LAYOUT, "hovermode": "closest", "margin": dict(l=60, r=20, t=30, b=60),
                         "legend": dict(orientation="v", yanchor="top", y=-0.14, xanchor="left", x=0)},
                      height=400 + 26 * len(rows), showlegend=True,
                      xaxis_title="model (round)", yaxis_title="test accuracy (%), mean ± std over seeds")
    fig.update_yaxes(gridcolor=GRID)
    return fig


def exit_bars(accs: Sequence[float], ensemble: float | None, *, baseline: float | None = None,
              baseline_label: str = "same backbone trained alone") -> go.Figure:
    """Final test accuracy of each BYOT exit and of their ensemble, with an optional plain baseline."""
    n = len(accs)
    names = [exit_name(i, n) for i in range(n)]
    colors = [exit_color(i, n) for i in range(n)]
    if ensemble is not None:
        names.append("ensemble")
        colors.append(ENSEMBLE_COLOR)
    values = list(accs) + ([ensemble] if ensemble is not None else [])
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colors, text=[f"{v:.2f}" for v in values],
                           textposition="outside", hovertemplate="%{x}: %{y:.2f}%<extra></extra>",
                           name="BYOT classifiers"))
    if baseline is not None:  # a legend entry, not an annotation: text over the bars would be unreadable
        fig.add_trace(go.Scatter(x=names, y=[baseline] * len(names), mode="lines", name=f"{baseline_label}: "
                                 f"{baseline:.2f}%", line=dict(color=TEACHER_COLOR, dash="dash", width=3),
                                 hovertemplate=f"{baseline_label}: %{{y:.2f}}%<extra></extra>"))
    lo = min(values + ([baseline] if baseline is not None else []))
    fig.update_layout(**{**_LAYOUT, "hovermode": "closest"}, height=440, showlegend=baseline is not None,
                      xaxis_title="classifier", yaxis_title="test accuracy (%)",
                      yaxis_range=[max(0.0, lo - 10), min(100.0, max(values) + 4) + 1])
    return fig


def latency_scatter(ms: Sequence[float], accs: Sequence[float], *, batch_size: int, device: str) -> go.Figure:
    """Accuracy vs measured latency per exit (BYOT Table 5 as a scatter)."""
    n = len(ms)
    fig = go.Figure(go.Scatter(
        x=list(ms), y=list(accs), mode="markers+text", text=[exit_name(i, n) for i in range(n)],
        textposition="top center", marker=dict(size=16, color=[exit_color(i, n) for i in range(n)],
                                               line=dict(width=1, color="#212529")),
        hovertemplate="%{text}: %{x:.2f} ms, %{y:.2f}%<extra></extra>"))
    pad_x = 0.15 * (max(ms) - min(ms) or 1.0)
    pad_y = 0.25 * (max(accs) - min(accs) or 1.0)
    fig.update_layout(**{**_LAYOUT, "hovermode": "closest"}, height=420, showlegend=False,
                      xaxis_title=f"latency per batch of {batch_size} on {device} (ms, median)",
                      yaxis_title="test accuracy (%)",
                      xaxis_range=[max(0.0, min(ms) - pad_x), max(ms) + pad_x],
                      yaxis_range=[min(accs) - pad_y, max(accs) + pad_y])
    return fig


def curvature_bars(rounds: Sequence[int], lam: Sequence[float], trace: Sequence[float],
                   stderr: Sequence[float], *, method: str = "kd") -> go.Figure:
    """λ_max (left) and Hessian trace ± stderr (right) per round, teacher vs students."""
    names = [round_name(k, method) for k in rounds]
    colors = [round_color(k) for k in rounds]
    bar = dict(type="bar", x=names, marker=dict(color=colors), showlegend=False)
    data = [dict(bar, y=list(lam), xaxis="x", yaxis="y", hovertemplate="%{x}: λ_max %{y:.4g}<extra></extra>"),
            dict(bar, y=list(trace), error_y=dict(type="data", array=list(stderr), visible=True), xaxis="x2",
                 yaxis="y2", hovertemplate="%{x}: trace %{y:.4g} ± %{error_y.array:.2g}<extra></extra>")]
    title = dict(xref="paper", yref="paper", y=1.0, yanchor="bottom", showarrow=False, font=dict(size=16))
    layout = dict(**{**_LAYOUT, "hovermode": "closest"}, height=420,
                  xaxis=dict(domain=[0, 0.46]), xaxis2=dict(domain=[0.54, 1], anchor="y2"),
                  yaxis=dict(title=dict(text="top Hessian eigenvalue λ_max"), gridcolor=GRID),
                  yaxis2=dict(anchor="x2", title=dict(text="Hessian trace (± std. error)"), gridcolor=GRID),
                  annotations=[dict(text="sharpest direction", x=0.23, xanchor="center", **title),
                               dict(text="total curvature", x=0.77, xanchor="center", **title)])
    return go.Figure(data=data, layout=layout)


def spectral_densities(curves: dict[int, tuple[Sequence[float], Sequence[float]]], *, method: str = "kd") -> go.Figure:
    """Eigen-spectral density per round (stochastic Lanczos quadrature) on a log density axis."""
    data = [dict(type="scatter", mode="lines", x=list(g), y=[max(v, 1e-6) for v in d], name=round_name(k, method),
                 line=dict(color=round_color(k), width=2.5)) for k, (g, d) in _ordered(curves)]
    layout = dict(**_LAYOUT, height=420, xaxis=dict(title=dict(text="eigenvalue"), gridcolor=GRID),
                  yaxis=dict(title=dict(text="density (log scale, floored at 1e-6)"), type="log", gridcolor=GRID,
                             exponentformat="power",  # 10⁻⁶, not plotly's SI "1µ"
                             range=[-6.2, math.log10(max([1e-6] + [max(tr["y"]) for tr in data])) + 0.3]))
    return go.Figure(data=data, layout=layout)


def eigen_ecdf(eigs: dict[int, Sequence[float]], *, method: str = "kd") -> go.Figure:
    """Empirical CDF of each round's top eigenvalues (Pham et al. Fig. 5 style): right = sharper."""
    data = []
    for k, values in _ordered(eigs):
        xs = sorted(values)
        data.append(dict(type="scatter", mode="lines", line=dict(shape="hv", color=round_color(k), width=2.5),
                         x=xs, y=[(i + 1) / len(xs) for i in range(len(xs))], name=round_name(k, method)))
    layout = dict(**{**_LAYOUT, "hovermode": "closest"}, height=420,
                  xaxis=dict(title=dict(text="eigenvalue (top-k of the Hessian)"), gridcolor=GRID),
                  yaxis=dict(title=dict(text="fraction of the top-k at or below"), range=[0, 1.02], gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


def reliability_diagram(curves: Sequence[tuple[str, str, Any]]) -> go.Figure:
    """Reliability diagrams overlaid (Guo et al. 2017): per confidence bin, accuracy (top, with the
    diagonal of perfect calibration) and the share of examples (bottom). ``curves``: (name, colour,
    ``calibration.Reliability``) in legend order; empty bins are skipped."""
    data: list[dict[str, Any]] = [dict(type="scatter", mode="lines", x=[0, 1], y=[0, 1], name="perfectly calibrated",
                                       line=dict(color="#868e96", dash="dot", width=1.5), hoverinfo="skip")]
    for name, color, r in curves:
        keep = [i for i, c in enumerate(r.count) if c]
        n = sum(r.count)
        data.append(dict(type="scatter", mode="lines+markers", x=[r.confidence[i] for i in keep],
                         y=[r.accuracy[i] for i in keep], name=name, legendgroup=name,
                         line=dict(color=color, width=2.5), marker=dict(size=7),
                         customdata=[r.count[i] for i in keep],
                         hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata} examples"))
        data.append(dict(type="scatter", mode="lines", x=[(r.edges[i] + r.edges[i + 1]) / 2 for i in keep],
                         y=[r.count[i] / n for i in keep], name=name, legendgroup=name, showlegend=False,
                         line=dict(color=color, width=2, shape="hvh"), xaxis="x2", yaxis="y2",
                         hovertemplate="bin centre %{x:.3f}<br>%{y:.1%} of the examples"))
    layout = dict(**{**_LAYOUT, "hovermode": "closest"}, height=560,
                  xaxis=dict(range=[0, 1.02], gridcolor=GRID, anchor="y", matches="x2", showticklabels=False),
                  yaxis=dict(title=dict(text="accuracy in the bin"), range=[0, 1.02], domain=[0.36, 1], gridcolor=GRID),
                  xaxis2=dict(title=dict(text="confidence (max softmax probability)"), range=[0, 1.02], gridcolor=GRID,
                              anchor="y2"),
                  yaxis2=dict(title=dict(text="share"), domain=[0, 0.28], gridcolor=GRID, tickformat=".0%",
                              rangemode="tozero"))
    return go.Figure(data=data, layout=layout)


def logit_distances(rounds: Sequence[int], mse: Sequence[float], kl: Sequence[float]) -> go.Figure:
    """Per student round k, the distance to its own teacher (round k - 1): logit MSE (Pham et al.
    Fig. 6, left panel) and KL divergence (right panel)."""
    labels = [f"student {k} vs {'teacher' if k == 1 else f'student {k - 1}'}" for k in rounds]
    colors = [round_color(k) for k in rounds]
    data = [dict(type="bar", x=labels, y=list(mse), marker=dict(color=colors), name="logit MSE", showlegend=False,
                 hovertemplate="%{x}<br>logit MSE %{y:.4g}<extra></extra>"),
            dict(type="bar", x=labels, y=list(kl), marker=dict(color=colors), name="KL", showlegend=False,
                 xaxis="x2", yaxis="y2", hovertemplate="%{x}<br>KL %{y:.4g} nats<extra></extra>")]
    layout = dict(**{**_LAYOUT, "hovermode": "closest", "margin": dict(l=70, r=20, t=30, b=50)}, height=360,
                  xaxis=dict(domain=[0, 0.42], anchor="y"), xaxis2=dict(domain=[0.58, 1], anchor="y2"),
                  yaxis=dict(title=dict(text="logit MSE to its teacher"), gridcolor=GRID, rangemode="tozero"),
                  yaxis2=dict(title=dict(text="KL(teacher ‖ student), nats"), gridcolor=GRID, rangemode="tozero",
                              anchor="x2"))
    return go.Figure(data=data, layout=layout)


def class_deltas(class_names: Sequence[str], deltas: dict[int, Sequence[float | None]]) -> go.Figure:
    """Per-class test accuracy of each student minus the teacher's, in percentage points (grouped bars)."""
    data = [dict(type="bar", x=list(class_names), y=[None if v is None else v for v in d], name=round_name(k),
                 marker=dict(color=round_color(k)), hovertemplate="class %{x}: %{y:+.1f} points")
            for k, d in sorted(deltas.items())]
    layout = dict(**_LAYOUT, height=380, barmode="group",
                  xaxis=dict(title=dict(text="class"), type="category"),
                  yaxis=dict(title=dict(text="accuracy − teacher's (points)"), gridcolor=GRID, zeroline=True,
                             zerolinecolor="#495057", zerolinewidth=1.5))
    return go.Figure(data=data, layout=layout)


def corruption_curves(results: Sequence[Any], *, method: str = "kd") -> go.Figure:
    """Test accuracy vs corruption severity (0 = clean), one panel per corruption, one line per round.
    ``results``: ``robustness.RoundRobustness`` items of one run."""
    names = list(results[0].accuracy) if results else []
    gap, n = 0.03, max(1, len(names))
    width = (1 - gap * (n - 1)) / n
    data, layout = [], dict(**{**_LAYOUT, "hovermode": "closest"}, height=380, annotations=[])
    for i, name in enumerate(names):
        ax = "" if i == 0 else str(i + 1)
        lo = i * (width + gap)
        layout[f"xaxis{ax}"] = dict(domain=[lo, lo + width], anchor=f"y{ax}", tickvals=[0, 1, 2, 3, 4, 5],
                                    title=dict(text="severity"), gridcolor=GRID)
        layout[f"yaxis{ax}"] = dict(anchor=f"x{ax}", range=[0, 101], gridcolor=GRID, showticklabels=i == 0,
                                    **({"title": dict(text="test accuracy (%)")} if i == 0 else {}), matches="y")
        layout["annotations"].append(dict(text=name.replace("_", " "), x=lo + width / 2, y=1.0, xref="paper",
                                          yref="paper", yanchor="bottom", showarrow=False, font=dict(size=14)))
        for r in results:
            data.append(dict(type="scatter", mode="lines+markers", x=[0, 1, 2, 3, 4, 5], y=[r.clean] + r.accuracy[name],
                             name=round_name(r.round, method), legendgroup=str(r.round), showlegend=i == 0,
                             line=dict(color=round_color(r.round), width=2.5), marker=dict(size=6),
                             xaxis=f"x{ax}", yaxis=f"y{ax}",
                             hovertemplate=f"{name.replace('_', ' ')}, severity %{{x}}: %{{y:.1f}}%"))
    return go.Figure(data=data, layout=layout)


def corruption_errors(results: Sequence[Any], *, method: str = "kd",
                      extra: Sequence[str] = ()) -> go.Figure:
    """Test error % per corruption (mean over its 5 severities), one bar per round in each corruption's group, the
    clean error first. ``results``: ``robustness.RoundRobustness`` items of one run (CIFAR-C: 15 + 4 files); the
    corruptions in ``extra`` (outside the mCE) are starred. A corruption a round could not read has no bar."""
    names = list(dict.fromkeys(n for r in results for n in r.accuracy))
    labels = ["clean"] + [n.replace("_", " ") + (" *" if n in extra else "") for n in names]
    data = []
    for r in results:
        errors = r.errors
        data.append(dict(type="bar", x=labels, y=[100.0 - r.clean] + [errors.get(n) for n in names],
                         name=round_name(r.round, method), marker=dict(color=round_color(r.round)),
                         hovertemplate="%{x}: %{y:.2f}% error<extra>%{fullData.name}</extra>"))
    layout = dict(**{**_LAYOUT, "hovermode": "closest"}, height=440, barmode="group",
                  xaxis=dict(tickangle=-40), yaxis=dict(title=dict(text="test error (%), mean of 5 severities"),
                                                         gridcolor=GRID, rangemode="tozero"))
    return go.Figure(data=data, layout=layout)


def mce_by_round(runs: Sequence[tuple[str, str, Sequence[Any]]]) -> go.Figure:
    """Mean corruption error (solid) and clean error (dashed, same colour) per round, one colour and marker symbol
    per run (``config_style``). ``runs``: (legend label, method, ``RoundRobustness`` items with an ``mce``)."""
    data = []
    for i, (label, method, results) in enumerate(runs):
        color, symbol = config_style(i)
        x = [round_name(r.round, method) for r in results]
        data.append(dict(type="scatter", mode="lines+markers", x=x, y=[r.mce for r in results], name=f"{label}: mCE",
                         line=dict(color=color, width=3), marker=dict(size=11, color=color, symbol=symbol),
                         hovertemplate="%{x}: %{y:.2f}%<extra>%{fullData.name}</extra>"))
        data.append(dict(type="scatter", mode="lines+markers", x=x, y=[100.0 - r.clean for r in results],
                         name=f"{label}: clean error", line=dict(color=color, width=2, dash="dash"),
                         marker=dict(size=8, color=color, symbol=symbol),
                         hovertemplate="%{x}: %{y:.2f}%<extra>%{fullData.name}</extra>"))
    layout = dict(**{**_LAYOUT, "hovermode": "closest", "margin": dict(l=60, r=20, t=30, b=60),
                     "legend": dict(orientation="v", yanchor="top", y=-0.14, xanchor="left", x=0)},
                  height=400 + 26 * len(data), xaxis=dict(title=dict(text="model (round)")),
                  yaxis=dict(title=dict(text="test error (%)"), gridcolor=GRID, rangemode="tozero"))
    return go.Figure(data=data, layout=layout)


def id_vs_ood(points: Sequence[tuple[str, str, int, float, float, str]]) -> go.Figure:
    """Out-of-distribution vs in-distribution accuracy, one marker per (run, round): ``points`` are
    (configuration label, run id, round, clean %, mean corrupted %, method). Pham et al. Sec. 7 read
    robustness off this plane: a model above the line through the others is *effectively* more robust.

    Each configuration has a colour and a marker symbol (``config_style``) and a legend entry; a line in
    its colour joins each run's rounds in order, and a tag beside each marker names the round (T = the
    teacher, S1 = student 1, ...), so a teacher and its students read without hovering."""
    configs = list(dict.fromkeys(p[0] for p in points))
    runs: dict[str, list[tuple[str, int, float, float, str]]] = {}
    for label, run_id, k, clean, ood, method in points:
        runs.setdefault(run_id, []).append((label, k, clean, ood, method))
    data, shown = [], set()
    for run_id, items in runs.items():
        items.sort(key=lambda it: it[1])
        label = items[0][0]
        color, symbol = config_style(configs.index(label))
        data.append(dict(type="scatter", mode="lines+markers+text", x=[it[2] for it in items],
                         y=[it[3] for it in items], name=label, legendgroup=label, showlegend=label not in shown,
                         text=[round_tag(k, m) for _, k, _, _, m in items], textposition="top center",
                         textfont=dict(color=color),
                         customdata=[f"{run_id} · {round_name(k, m)}" for _, k, _, _, m in items],
                         line=dict(color=color, width=1.5), marker=dict(symbol=symbol, size=13, color=color,
                                                                         line=dict(color="white", width=1)),
                         hovertemplate="%{customdata}<br>clean %{x:.2f}% · corrupted %{y:.2f}%<extra></extra>"))
        shown.add(label)
    tags = any(round_tag(k, m) for _, _, k, _, _, m in points)
    layout = dict(**{**_LAYOUT, "hovermode": "closest", "margin": dict(l=60, r=20, t=30, b=60),
                     "legend": dict(orientation="v", yanchor="top", y=-0.16, xanchor="left", x=0,
                                    title=dict(text="T = teacher, S1 = student 1, …" if tags else ""))},
                  height=440 + 26 * (len(configs) + tags),
                  xaxis=dict(title=dict(text="clean test accuracy (%), in distribution"), gridcolor=GRID),
                  yaxis=dict(title=dict(text="mean accuracy under corruption (%)"), gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


def round_tag(k: int, method: str = "kd") -> str:
    """A round's tag beside a marker: "T" (the teacher), "S1", "S2", ... for multi-round methods; "" else."""
    try:
        multi = terms.is_multi_round(method)
    except ConfigError:
        multi = False
    return ("T" if k == 0 else f"S{k}") if multi else ""


def alpha_tradeoff(curves: dict[int, tuple[Sequence[float], Sequence[float], Sequence[float]]], *,
                   method: str = "kd") -> go.Figure:
    """Accuracy vs alpha for runs that differ only in alpha: per round, (alphas, clean %, corrupted %);
    clean solid, corrupted dashed."""
    data = []
    for k, (alphas, clean, ood) in _ordered(curves):
        name = round_name(k, method)
        data.append(dict(type="scatter", mode="lines+markers", x=list(alphas), y=list(clean), name=f"{name}, clean",
                         line=dict(color=round_color(k), width=2.5), legendgroup=str(k)))
        data.append(dict(type="scatter", mode="lines+markers", x=list(alphas), y=list(ood), name=f"{name}, corrupted",
                         line=dict(color=round_color(k), width=2.5, dash="dash"), legendgroup=str(k)))
    layout = dict(**_LAYOUT, height=420,
                  xaxis=dict(title=dict(text="α (weight on the hard labels; 1 − α on the teacher)"), gridcolor=GRID),
                  yaxis=dict(title=dict(text="test accuracy (%)"), gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


def ensemble_sizes(rows: Sequence[Any]) -> go.Figure:
    """Test accuracy vs ensemble size m (Pham et al. Fig. 2): BAN (rounds 0..m-1 of one chain, mean ±
    std over seeds), an ensemble of m independently trained teachers, and round m-1 alone.
    ``rows``: ``ensembles.SizeRow`` items."""
    def series(attr: str, name: str, color: str, dash: str = "solid") -> dict[str, Any]:
        pts = [(r.size, getattr(r, attr)) for r in rows if getattr(r, attr) is not None]
        ys = [v[0] if isinstance(v, tuple) else v for _, v in pts]
        err = [v[1] if isinstance(v, tuple) else 0.0 for _, v in pts]
        return dict(type="scatter", mode="lines+markers", x=[m for m, _ in pts], y=ys, name=name,
                    error_y=dict(type="data", array=err, visible=any(err)), marker=dict(size=9),
                    line=dict(color=color, width=3, dash=dash))
    data = [series("independent", "ensemble of m independently trained teachers", ENSEMBLE_COLOR),
            series("ban", "BAN: ensemble of rounds 0..m−1", STUDENT_COLORS[0]),
            series("last_student", "round m−1 alone", TEACHER_COLOR, "dot")]
    layout = dict(**_LAYOUT, height=420,
                  xaxis=dict(title=dict(text="models in the ensemble (m)"), dtick=1, gridcolor=GRID),
                  yaxis=dict(title=dict(text="test accuracy (%)"), gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


CLASS_COLORS = ("#1c7ed6", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#f59f00", "#5c940d",
                "#862e9c", "#495057")


def exit_pca(exits: Sequence[Any], class_names: Sequence[str]) -> go.Figure:
    """One panel per exit (shallow to deep): its test features on their top two principal components,
    coloured by class (BYOT Fig. 6). ``exits``: ``exit_features.ExitFeatures`` items."""
    n = max(1, len(exits))
    gap = 0.03
    width = (1 - gap * (n - 1)) / n
    data, layout = [], dict(**{**_LAYOUT, "hovermode": "closest"}, height=380, annotations=[])
    classes = sorted({c for e in exits for c in e.labels})
    for i, e in enumerate(exits):
        ax = "" if i == 0 else str(i + 1)
        lo = i * (width + gap)
        layout[f"xaxis{ax}"] = dict(domain=[lo, lo + width], anchor=f"y{ax}", showticklabels=False, zeroline=False,
                                    title=dict(text="PC 1"))
        layout[f"yaxis{ax}"] = dict(anchor=f"x{ax}", showticklabels=False, zeroline=False, gridcolor=GRID,
                                    **({"title": dict(text="PC 2")} if i == 0 else {}))
        layout["annotations"].append(dict(text=f"{exit_name(e.exit, n)} · SSE/SSB {e.separation.ratio:.3g}",
                                          x=lo + width / 2, y=1.0, xref="paper", yref="paper", yanchor="bottom",
                                          showarrow=False, font=dict(size=14)))
        for c in classes:
            pts = [p for p, lab in zip(e.points, e.labels) if lab == c]
            name = class_names[c] if c < len(class_names) else str(c)
            data.append(dict(type="scattergl", mode="markers", x=[p[0] for p in pts], y=[p[1] for p in pts],
                             name=name, legendgroup=name, showlegend=i == 0, xaxis=f"x{ax}", yaxis=f"y{ax}",
                             marker=dict(size=5, color=CLASS_COLORS[c % len(CLASS_COLORS)], opacity=0.75),
                             hovertemplate=f"class {name}<extra></extra>"))
    return go.Figure(data=data, layout=layout)


def layer_gradients(series: dict[str, tuple[Sequence[str], Sequence[float], str]]) -> go.Figure:
    """Mean |gradient| per convolution layer (BYOT Fig. 5), one line per model on a log axis:
    ``series``: name -> (layer names, magnitudes, colour)."""
    data = [dict(type="scatter", mode="lines+markers", x=list(range(1, len(v) + 1)), y=list(v), name=name,
                 text=list(layers), line=dict(color=color, width=3), marker=dict(size=8),
                 hovertemplate="layer %{x} (%{text}): %{y:.3g}")
            for name, (layers, v, color) in series.items()]
    layout = dict(**{**_LAYOUT, "hovermode": "closest"}, height=400,
                  xaxis=dict(title=dict(text="convolution layer (input → output)"), dtick=1, gridcolor=GRID),
                  yaxis=dict(title=dict(text="mean |gradient| per step"), type="log", gridcolor=GRID,
                             exponentformat="power"))
    return go.Figure(data=data, layout=layout)


def teacher_count_curves(curve: Sequence[Any]) -> go.Figure:
    """Pham et al. Fig. 3: test accuracy of the ensemble teacher and of its student vs the number of
    teachers. ``curve``: ``ensembles.TeacherCount`` items, sorted by N."""
    def series(attr: str, name: str, color: str) -> dict[str, Any]:
        pts = [(c.teachers, getattr(c, attr)) for c in curve if getattr(c, attr) is not None]
        return dict(type="scatter", mode="lines+markers", x=[n for n, _ in pts], y=[v[0] for _, v in pts],
                    error_y=dict(type="data", array=[v[1] for _, v in pts], visible=any(v[1] for _, v in pts)),
                    name=name, line=dict(color=color, width=3), marker=dict(size=9))
    data = [series("teacher", "ensemble of N teachers", TEACHER_COLOR),
            series("student", "student 1 (distilled from it)", STUDENT_COLORS[0])]
    layout = dict(**_LAYOUT, height=400, xaxis=dict(title=dict(text="teachers in the ensemble (N)"), dtick=1,
                                                    gridcolor=GRID),
                  yaxis=dict(title=dict(text="test accuracy (%)"), gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


# The loss-surface coordinates: steps along two random filter-normalized directions d₁, d₂ of weight space,
# loss(θ + δ·d₁ + η·d₂). Not α and β (Li et al.'s letters): α is distillation's weight on the labels here.
# Short enough for three panels side by side in presentation mode; the page says "filter-normalized".
DIRECTION_1 = "δ (direction 1)"
DIRECTION_2 = "η (direction 2)"


def loss_lines(lines: dict[int, tuple[Sequence[float], Sequence[float]]], *, method: str = "kd",
               xaxis: str = "δ: step along a random filter-normalized direction") -> go.Figure:
    """1-D loss curves overlaid, one per round (Li et al. 1-D plots, or the teacher→student line)."""
    data = [dict(type="scatter", mode="lines", x=list(x), y=[None if v is None else v for v in y],
                 name=round_name(k, method), line=dict(color=round_color(k), width=3))
            for k, (x, y) in _ordered(lines)]
    layout = dict(**_LAYOUT, height=420, xaxis=dict(title=dict(text=xaxis), gridcolor=GRID),
                  yaxis=dict(title=dict(text="training loss (cross-entropy)"), gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


def zrange(surfaces: dict[int, Any]) -> tuple[float, float]:
    values = [v for (_, _, z) in surfaces.values() for row in z for v in row if v is not None]
    return min(values), max(values)


def loss_contours(surfaces: dict[int, tuple[Sequence[float], Sequence[float], Sequence[Sequence[float]]]], *,
                  method: str = "kd") -> go.Figure:
    """2-D loss contours side by side, one per round, on one shared colour scale (same loss = same colour)."""
    zmin, zmax = zrange(surfaces)
    n, gap = len(surfaces), 0.04
    width = (1 - gap * (n - 1)) / n
    data, layout = [], dict(**{**_LAYOUT, "hovermode": "closest"}, height=460, annotations=[])
    for i, (k, (a, b, z)) in enumerate(_ordered(surfaces)):
        sx = "" if i == 0 else str(i + 1)
        lo = i * (width + gap)
        data.append(dict(type="contour", x=list(a), y=list(b), z=z, zmin=zmin, zmax=zmax, colorscale="Viridis",
                         contours=dict(coloring="heatmap", showlabels=True), ncontours=20, showscale=i == n - 1,
                         colorbar=dict(title=dict(text="loss")), xaxis=f"x{sx}", yaxis=f"y{sx}",
                         name=round_name(k, method),
                         hovertemplate="δ %{x:.2f}, η %{y:.2f}: loss %{z:.3f}<extra></extra>"))
        layout[f"xaxis{sx}"] = dict(domain=[lo, lo + width], title=dict(text=DIRECTION_1), anchor=f"y{sx}")
        layout[f"yaxis{sx}"] = dict(title=dict(text=DIRECTION_2 if i == 0 else ""), anchor=f"x{sx}",
                                    scaleanchor=f"x{sx}")
        layout["annotations"].append(dict(text=round_name(k, method), x=lo + width / 2, xanchor="center",
                                          xref="paper", yref="paper", y=1.0, yanchor="bottom", showarrow=False,
                                          font=dict(size=16, color=round_color(k))))
    return go.Figure(data=data, layout=layout)


# From above a corner (35° up, z up), looking a little below the box's centre: into the bowl, whose rim
# hides little of its floor. Far enough, with the box a little flattened, that the loss ticks fit a ~300 px
# column (three rounds side by side); nearer (or lower, e.g. eye (1.6, 1.6, 1.1)), WebGL clipped them and the
# near rim hid the minimum.
CAMERA_3D = dict(eye=dict(x=1.75, y=1.75, z=1.75), up=dict(x=0, y=0, z=1), center=dict(x=0, y=0, z=-0.25))


def loss_surface_3d(alphas: Sequence[float], betas: Sequence[float], loss: Sequence[Sequence[float]], *,
                    zrange: tuple[float, float], name: str) -> go.Figure:
    """A rotatable 3-D loss surface over (δ, η); pass the same zrange for every round so heights compare."""
    # No colour bar: the contours above carry the shared scale, and a bar per narrow column eats the plot.
    # CAMERA_3D looks down into the bowl. An axis title on z would be clipped in a narrow column (the page
    # names the height), and the long direction names would be too: the 3-D axes say only δ and η.
    data = [dict(type="surface", x=list(alphas), y=list(betas), z=loss, cmin=zrange[0], cmax=zrange[1],
                 colorscale="Viridis", showscale=False, name=name,
                 hovertemplate="δ %{x:.2f}, η %{y:.2f}: loss %{z:.3f}<extra></extra>")]
    layout = dict(**{**_LAYOUT, "hovermode": "closest", "margin": dict(l=25, r=0, t=40, b=0)}, height=420,
                  title=dict(text=name),
                  scene=dict(xaxis=dict(title=dict(text="δ")), yaxis=dict(title=dict(text="η")),
                             zaxis=dict(title=dict(text=""), range=list(zrange), nticks=5),
                             aspectratio=dict(x=1, y=1, z=0.85), camera=CAMERA_3D))
    return go.Figure(data=data, layout=layout)


def noise_curves(results: dict[int, tuple[Sequence[float], Sequence[float], Sequence[float]]], *,
                 method: str = "kd") -> go.Figure:
    """Training loss under Gaussian weight noise of growing relative size σ (BYOT Fig. 4): flatter = lower."""
    data = [dict(type="scatter", mode="lines+markers", x=list(sig), y=list(mean),
                 error_y=dict(type="data", array=list(std), visible=True), name=round_name(k, method),
                 line=dict(color=round_color(k), width=3)) for k, (sig, mean, std) in _ordered(results)]
    layout = dict(**_LAYOUT, height=420,
                  xaxis=dict(title=dict(text="weight noise σ (fraction of each tensor's RMS)"), gridcolor=GRID),
                  yaxis=dict(title=dict(text="training loss, mean ± std over draws"), gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


PRESENTATION_FONT = 22  # px: the smallest chart text in presentation mode, legible from the back of a lecture room
_LINE_GROW, _MARKER_GROW, _HEIGHT_GROW = 1.6, 1.5, 1.3


def presentation(fig: go.Figure, on: bool = True, *, size: float = PRESENTATION_FONT) -> go.Figure:
    """The figure for a projector: every text at least ``size`` px (titles larger), lines 1.6x and markers
    1.5x as thick, the figure 1.3x as tall and its margins grown with the text. A copy: ``fig`` stays as it
    was (its download too). ``on=False`` returns ``fig`` itself.

    Every text element gets an explicit size: Streamlit's chart template sets ticks, legend and hover text
    to ~12 px, and a template's size wins over ``layout.font``, so scaling the base font alone does nothing.
    Edited as plain dicts and validated once (plotly's per-property setters are too slow for the Live page's
    once-a-second redraw; BENCHMARKS.md, "Dashboard: page render with 10 finished runs")."""
    if not on:
        return fig
    d = fig.to_dict()
    layout = d["layout"]
    layout.pop("template", None)  # the copy gets the default (Streamlit's) template when drawn, as ``fig`` does
    grow = size / _nest(layout, "font").get("size", FONT["size"])
    layout["font"]["size"] = size
    for path in (("hoverlabel", "font"), ("legend", "font"), ("legend", "title", "font")):
        _nest(layout, *path)["size"] = size
    if layout.get("title"):
        _nest(layout, "title", "font")["size"] = round(1.2 * size)
    for k in ("xaxis", "yaxis"):  # plotly's defaults, unset in the dict: they get sizes too
        layout.setdefault(k, {})
    axes = {k: v for k, v in layout.items() if re.fullmatch(r"[xy]axis\d*", k)}
    scene_axes = [_nest(v, a) for k, v in layout.items() if re.fullmatch(r"scene\d*", k)
                  for a in ("xaxis", "yaxis", "zaxis")]
    for ax in [*axes.values(), *scene_axes]:
        _nest(ax, "tickfont")["size"] = size
        _nest(ax, "title", "font")["size"] = size
    for ax in scene_axes:  # a 3-D column is ~300 px wide: three large ticks per axis, not five
        ax["nticks"] = 3
    extra = {"x": 0, "y": 0}  # a title wrapped onto two lines needs a line more of margin
    for k, ax in axes.items():
        title = ax["title"].get("text") or ""
        if len(title) > _TITLE_CHARS and "<br>" not in title:
            ax["title"]["text"] = _two_lines(title)
            extra[k[0]] = extra[k[0]] or k[0] == "x" or k == "yaxis"  # other y titles sit between panels
    for note in layout.get("annotations", ()):
        font = _nest(note, "font")
        font["size"] = max(size, font.get("size", size) * grow)
    for trace in d["data"]:
        _bolder(trace, size)
    legend = layout["legend"]
    if legend.get("yanchor") == "top" and legend.get("y", 1) < 0:  # below the plot: clear of the larger x title
        legend["y"] *= grow
    if legend.get("yanchor") == "bottom" and legend.get("y", 0) > 1:  # above: clear of two-line panel titles
        legend["y"] = 1 + 2 * (legend["y"] - 1)
    _spread_panels(layout)
    narrow = [ax["domain"] for k, ax in layout.items() if re.fullmatch(r"xaxis\d*", k) and "domain" in ax
              and ax["domain"][1] - ax["domain"][0] < 0.26]
    for note in layout.get("annotations", ()):  # a panel's title over a narrow panel: on two lines
        text = note.get("text") or ""
        if note.get("xref") == "paper" and len(text) > 10 and "<br>" not in text \
                and any(a <= note.get("x", -1) <= b for a, b in narrow):
            note["text"] = _two_lines(text)
    if any(t.get("type") == "surface" for t in d["data"]):
        return go.Figure(d)  # a 3-D scene scales with the height: taller, it would spill out of its column
    margin = _nest(layout, "margin")
    for side, default in (("l", 80), ("t", 100), ("b", 80)):
        margin[side] = round(margin.get(side, default) * grow)
    margin["b"] += round(1.2 * size * extra["x"])
    margin["l"] += round(1.2 * size * extra["y"])
    layout["height"] = round(layout.get("height", 450) * _HEIGHT_GROW)
    return go.Figure(d)


def _spread_panels(layout: dict[str, Any], *, titled: float = 0.12, ticked: float = 0.07) -> None:
    """Side-by-side panels (x axes with their own domains) pulled apart, in place, so that the gap before a
    panel with y tick labels is at least ``ticked`` of the width (``titled`` with a y title): in presentation
    mode those labels grow into the panel on their left. Paper-x annotations (panel titles) move along."""
    xs = {k: ax for k, ax in layout.items() if re.fullmatch(r"xaxis\d*", k) and "domain" in ax}
    panels = sorted({tuple(ax["domain"]) for ax in xs.values()})
    if len(panels) < 2 or any(b[0] < a[1] for a, b in zip(panels, panels[1:])):
        return  # one panel, or panels stacked or overlapping: nothing side by side
    need = [0.0]
    for a, b in zip(panels, panels[1:]):
        ys = [layout.get("yaxis" + k[5:], {}) for k, ax in xs.items() if tuple(ax["domain"]) == b]
        labelled = [y for y in ys if y.get("showticklabels", True)]
        titles = [(y.get("title") or {}).get("text") or "" for y in labelled]
        want = titled * (1.4 if any("<br>" in t for t in titles) else 1) if any(titles) else ticked if labelled else 0
        need.append(max(b[0] - a[1], want))
    widths = [b - a for a, b in panels]
    scale = (panels[-1][1] - panels[0][0] - sum(need)) / sum(widths)
    if scale >= 1 or scale <= 0.3:
        return
    new, x = {}, panels[0][0]
    for (a, b), gap in zip(panels, need):
        x += gap
        new[(a, b)] = (x, x + (b - a) * scale)
        x += (b - a) * scale
    for ax in xs.values():
        ax["domain"] = list(new[tuple(ax["domain"])])
    for note in layout.get("annotations", ()):
        if note.get("xref") == "paper" and "x" in note:
            for (a, b), (c, e) in new.items():
                if a - 1e-9 <= note["x"] <= b + 1e-9:
                    note["x"] = c + (note["x"] - a) * (e - c) / (b - a)
                    break


_TITLE_CHARS = 40  # an axis title longer than this goes on two lines in presentation mode (22 px: ~440 px)


def _two_lines(text: str) -> str:
    """``text`` broken at the space nearest its middle: "a long<br>axis title"."""
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - len(text) / 2))
    return f"{text[:cut]}<br>{text[cut + 1:]}"


def _nest(d: dict, *keys: str) -> dict:
    """d[k1][k2]..., creating empty dicts on the way (a title given as a bare string becomes {"text": ...})."""
    for k in keys:
        if isinstance(d.get(k), str):
            d[k] = {"text": d[k]}
        d = d.setdefault(k, {})
    return d


def _bolder(trace: dict[str, Any], size: float) -> None:
    """Thicker lines, larger markers, ``size`` px trace text (labels, colour bars): one trace dict, in place."""
    kind = trace.get("type", "scatter")
    scatter = kind.startswith("scatter")
    if scatter or "width" in trace.get("line", {}):  # plotly draws a scatter's line 2 px wide when unset
        line = _nest(trace, "line")
        line["width"] = line.get("width", 2) * _LINE_GROW
    if scatter:
        marker = _nest(trace, "marker")
        s = marker.get("size", 6)
        marker["size"] = [v * _MARKER_GROW for v in s] if isinstance(s, (list, tuple)) else s * _MARKER_GROW
        if marker.get("line", {}).get("width"):
            marker["line"]["width"] *= _LINE_GROW
    if scatter or kind == "bar":
        _nest(trace, "textfont")["size"] = size
    for err in ("error_x", "error_y"):
        if trace.get(err, {}).get("visible"):
            trace[err]["thickness"] = trace[err].get("thickness", 2) * _LINE_GROW
            trace[err]["width"] = trace[err].get("width", 4) * _MARKER_GROW
    if kind == "contour":
        _nest(trace, "contours", "labelfont")["size"] = size
    if kind in ("contour", "heatmap", "surface"):
        _nest(trace, "colorbar", "tickfont")["size"] = size
        _nest(trace, "colorbar", "title", "font")["size"] = size


def figure_html(fig: go.Figure, title: str | None = None) -> str:
    """A standalone HTML file of ``print_figure(fig, title)`` (plotly.js inlined: opens offline)."""
    return print_figure(fig, title).to_html(include_plotlyjs=True, full_html=True)


def print_figure(fig: go.Figure, title: str | None = None) -> go.Figure:
    """The figure as a saved file shows it (HTML, SVG, PDF, PNG): a copy in plotly's white template with a white
    background, whatever theme the dashboard draws it in (``fig`` as the pages pass it, not its presentation copy).

    ``title``: a caption above the chart, e.g. "run <id> · demo · kd α=0.2 τ=4 · …", so a saved file says
    what it shows; the figure's own title, if it has one, follows on a smaller line. The plot area keeps
    its size: the caption gets its own band above the margin."""
    out = go.Figure(fig).update_layout(template="plotly_white", paper_bgcolor="white", plot_bgcolor="white")
    if title:
        own = out.layout.title.text
        band = 60 if own else 40
        top = out.layout.margin.t if out.layout.margin.t is not None else 100
        # The figure's own title as a subtitle, not a second line: a two-line title anchored at the top is drawn
        # half above the page in SVG, PDF and PNG files.
        out.update_layout(title=dict(text=title, subtitle=dict(text=own or "", font=dict(size=12)), x=0.01,
                                     xanchor="left", xref="container", y=1, yref="container", yanchor="top",
                                     pad=dict(t=10), font=dict(size=16)),
                          margin=dict(t=top + band), height=(out.layout.height or 450) + band)
    return out
