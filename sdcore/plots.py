"""Pure figure builders: data -> plotly Figure. The dashboard and CLI exports share them.

Colours are fixed per round everywhere: the teacher (round 0) in a warm red-orange, students in
a family of blues/teals indexed by their round, so "student 2" is the same colour on every page.
BYOT exits use a sequential palette from shallow (light) to deepest (dark).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import plotly.graph_objects as go

from sdcore import terms
from sdcore.config import ConfigError

TEACHER_COLOR = "#d9480f"
STUDENT_COLORS = ("#1c7ed6", "#0ca678", "#7048e8", "#1098ad", "#4263eb", "#2b8a3e", "#862e9c", "#0b7285")
EXIT_COLORS = ("#a5d8ff", "#4dabf7", "#1c7ed6", "#0b3d73")  # light (shallow) -> dark (deepest)
ENSEMBLE_COLOR = "#e64980"  # pink: apart from the teacher's red-orange and the students' blues/greens
FONT = dict(size=15)
GRID = "#e9ecef"
# The legend sits above the plot area, clear of the panel titles (they sit at y=1 of the plot area).
# No template here: applying one costs ~0.1 s per figure (too slow for a once-a-second redraw); the
# dashboard styles charts with Streamlit's theme and figure_html adds plotly_white for downloads.
_LAYOUT = dict(font=FONT, hovermode="x unified", margin=dict(l=60, r=20, t=100, b=50), plot_bgcolor="white",
               legend=dict(orientation="h", yanchor="bottom", y=1.12, xanchor="left", x=0))


BASELINE_COLORS = ("#f59f00", "#495057", "#c2255c", "#5c940d")  # other runs' models shown next to a run's rounds


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


def _line(x, y, name: str, color: str, *, panel: int, width: float = 3, dash: str = "solid",
          legend: bool = True, group: str | None = None) -> dict[str, Any]:
    """A scatter trace as a plain dict on panel 1 (left) or 2 (right); validated once by go.Figure."""
    return dict(type="scatter", mode="lines+markers" if len(x) == 1 else "lines", x=list(x), y=list(y), name=name,
                legendgroup=group or name, showlegend=legend, line=dict(color=color, width=width, dash=dash),
                xaxis="x" if panel == 1 else "x2", yaxis="y" if panel == 1 else "y2")


PART_NAMES = {"ce": "· deepest exit's CE", "byot_ce": "· BYOT: shallow exits' CE",
              "byot_distill": "· BYOT: distillation", "byot_hint": "· BYOT: feature hint",
              "dmfl": "· DMFL: feature KL"}  # train_parts keys (sdcore.methods.single): weighted, they add up
PART_COLORS = ("#1c7ed6", "#e8590c", "#2b8a3e", "#862e9c", "#c92a2a")


def training_curves(metrics: Sequence[dict[str, Any]], *, method: str = "kd", title: str = "") -> go.Figure:
    """Train loss (left) and test/validation accuracy (right) per epoch, every round on the same axes.

    metrics: metrics.jsonl records. Test accuracy is a solid line, validation dotted (same colour).
    Runs with exits (records with test_acc_exits) show every exit's test accuracy instead of rounds, and
    the objective's parts (train_parts: each term's weighted share, they add up to it) dotted beside it.
    Built from dicts in one go (no make_subplots, no per-trace validation): the Live page redraws
    it every second while training runs in the same process, so its cost is taken from training.
    """
    traces: list[dict[str, Any]] = []
    rounds = _by_round(metrics)
    byot = any("test_acc_exits" in m for m in metrics)
    if byot:
        ms = rounds.get(0, [])
        ep = [m["epoch"] for m in ms]
        traces.append(_line(ep, [m["train_loss"] for m in ms], "training objective (all terms)", "#495057", panel=1))
        parts = list(ms[0].get("train_parts", {})) if ms else []
        traces += [_line(ep, [m.get("train_parts", {}).get(p) for m in ms], PART_NAMES.get(p, p),
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
    for k, ms in sorted(rounds.items()) if not (byot or peers) else ():
        ep = [m["epoch"] for m in ms]
        color, name = round_color(k), round_name(k, method)
        traces.append(_line(ep, [m["train_loss"] for m in ms], name, color, panel=1, legend=False))
        traces.append(_line(ep, [m["test_acc"] for m in ms], name, color, panel=2))
        if ms and "val_acc" in ms[0]:
            traces.append(_line(ep, [m["val_acc"] for m in ms], f"{name}, validation", color, panel=2, width=1.5,
                                dash="dot", legend=False, group=name))
    few = max((m["epoch"] for m in metrics), default=0) <= 10
    axis = dict(title=dict(text="epoch"), dtick=1 if few else None, showgrid=True, gridcolor=GRID, zeroline=False)
    panel_title = dict(xref="paper", yref="paper", y=1.0, yanchor="bottom", showarrow=False, font=dict(size=16))
    layout = dict(
        **_LAYOUT, height=470, title=dict(text=title) if title else None,
        xaxis=dict(domain=[0.0, 0.46], **axis), xaxis2=dict(domain=[0.54, 1.0], anchor="y2", **axis),
        yaxis=dict(title=dict(text="loss (nats)"), gridcolor=GRID),
        yaxis2=dict(anchor="x2", gridcolor=GRID,
                    title=dict(text="test accuracy (%)" + ("" if byot or peers else " — dotted: validation"))),
        annotations=[dict(text="training loss", x=0.23, xanchor="center", **panel_title),
                     dict(text="accuracy", x=0.77, xanchor="center", **panel_title)])
    return go.Figure(data=traces, layout=layout)


def accuracy_by_round(rows: Sequence[Any]) -> go.Figure:
    """Mean ± std test accuracy per round for each compared config (CompareRow-like objects)."""
    fig = go.Figure()
    for row in rows:
        ks = [r.round for r in row.rounds]
        fig.add_trace(go.Scatter(
            x=[round_name(k, row.method) for k in ks], y=[r.mean for r in row.rounds],
            error_y=dict(type="data", array=[r.std for r in row.rounds], visible=True),
            mode="lines+markers", name=f"{row.label} (n={row.rounds[0].n})" if row.rounds else row.label,
            marker=dict(size=12, color=[round_color(k) for k in ks], line=dict(width=1, color="#212529")),
            line=dict(width=2, color="#868e96"),
            hovertemplate="%{x}: %{y:.2f}% ± %{error_y.array:.2f}<extra>%{fullData.name}</extra>"))
    fig.update_layout(**{**_LAYOUT, "hovermode": "closest"}, height=420, showlegend=True,  # names the config
                      xaxis_title="model (round)", yaxis_title="test accuracy (%), mean ± std over seeds")
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
                           textposition="outside", hovertemplate="%{x}: %{y:.2f}%<extra></extra>", name="BYOT classifiers"))
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
                  yaxis2=dict(title=dict(text="share"), domain=[0, 0.28], gridcolor=GRID, tickformat=".0%", rangemode="tozero"))
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


def id_vs_ood(points: Sequence[tuple[str, int, float, float, str]]) -> go.Figure:
    """Out-of-distribution vs in-distribution accuracy, one marker per (run, round): ``points`` are
    (run label, round, clean %, mean corrupted %, method). Pham et al. Sec. 7 read robustness off
    this plane: a model above the line through the others is *effectively* more robust."""
    by_round: dict[int, list[tuple[str, float, float, str]]] = {}
    for label, k, clean, ood, method in points:
        by_round.setdefault(k, []).append((label, clean, ood, method))
    data = [dict(type="scatter", mode="markers", name=round_name(k, items[0][3]),
                 x=[c for _, c, _, _ in items], y=[o for _, _, o, _ in items], text=[lab for lab, _, _, _ in items],
                 marker=dict(color=round_color(k), size=11, line=dict(color="white", width=1)),
                 hovertemplate="%{text}<br>clean %{x:.2f}% · corrupted %{y:.2f}%<extra></extra>")
            for k, items in sorted(by_round.items())]
    layout = dict(**{**_LAYOUT, "hovermode": "closest"}, height=420,
                  xaxis=dict(title=dict(text="clean test accuracy (%), in distribution"), gridcolor=GRID),
                  yaxis=dict(title=dict(text="mean accuracy under corruption (%)"), gridcolor=GRID))
    return go.Figure(data=data, layout=layout)


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
    layout = dict(**_LAYOUT, height=420, xaxis=dict(title=dict(text="models in the ensemble (m)"), dtick=1, gridcolor=GRID),
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


def loss_lines(lines: dict[int, tuple[Sequence[float], Sequence[float]]], *, method: str = "kd",
               xaxis: str = "step along a random filter-normalized direction (α)") -> go.Figure:
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
                         name=round_name(k, method), hovertemplate="α %{x:.2f}, β %{y:.2f}: loss %{z:.3f}<extra></extra>"))
        layout[f"xaxis{sx}"] = dict(domain=[lo, lo + width], title=dict(text="α"), anchor=f"y{sx}")
        layout[f"yaxis{sx}"] = dict(title=dict(text="β" if i == 0 else ""), anchor=f"x{sx}", scaleanchor=f"x{sx}")
        layout["annotations"].append(dict(text=round_name(k, method), x=lo + width / 2, xanchor="center",
                                          xref="paper", yref="paper", y=1.0, yanchor="bottom", showarrow=False,
                                          font=dict(size=16, color=round_color(k))))
    return go.Figure(data=data, layout=layout)


def loss_surface_3d(alphas: Sequence[float], betas: Sequence[float], loss: Sequence[Sequence[float]], *,
                    zrange: tuple[float, float], name: str) -> go.Figure:
    """A rotatable 3-D loss surface; pass the same zrange for every round so heights compare."""
    # No colour bar: the contours above carry the shared scale, and a bar per narrow column eats the plot.
    # The camera sits far enough back that the loss ticks fit a ~300 px column (three rounds side by side);
    # nearer, WebGL clipped them, and an axis title there would be clipped too (the page names the height).
    data = [dict(type="surface", x=list(alphas), y=list(betas), z=loss, cmin=zrange[0], cmax=zrange[1],
                 colorscale="Viridis", showscale=False, name=name)]
    layout = dict(**{**_LAYOUT, "hovermode": "closest", "margin": dict(l=25, r=0, t=40, b=0)}, height=420,
                  title=dict(text=name),
                  scene=dict(xaxis=dict(title=dict(text="α")), yaxis=dict(title=dict(text="β")),
                             zaxis=dict(title=dict(text=""), range=list(zrange), nticks=5),
                             camera=dict(eye=dict(x=2.0, y=2.0, z=1.3))))
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


def figure_html(fig: go.Figure) -> str:
    """A standalone HTML file of the figure (plotly.js inlined: opens offline), in plotly's white template."""
    return go.Figure(fig).update_layout(template="plotly_white").to_html(include_plotlyjs=True, full_html=True)
