"""Issue 14 (items 5 and 7): presentation mode, per-configuration styles, the loss-surface camera and axis
names, the caption of a downloaded figure, numbers (not reprs) in CSV downloads. Pure functions, exact checks."""
import csv
import io
import json
import math
from types import SimpleNamespace

import pytest

from sdcore import plots
from sdcore.analysis.compare import config_summary
from sdcore.config import preset
from sdcore.runs import RunSummary, flat_record, records_csv

METRICS = [  # metrics.jsonl-shaped: two rounds, nested grad_abs and train_parts, a list per exit
    {"round": r, "epoch": e, "train_loss": 1.0 / e, "test_acc": 80.0 + e + r, "val_acc": 79.0 + e,
     "grad_abs": {"sections.0.0.weight": 0.02 * e, "sections.1.1.0.weight": 0.003},
     "train_parts": {"ce": 0.5, "kd": 0.25}, "test_acc_exits": [70.0, 75.0 + e]}
    for r in (0, 1) for e in (1, 2, 3)]
SURFACE = ([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [[2.0, 1.0, 2.0], [1.0, 0.5, 1.0], [2.0, 1.0, 2.0]])


def _row(label, means, n=2):
    return SimpleNamespace(label=label, method="kd",
                           rounds=tuple(SimpleNamespace(round=k, mean=m, std=0.5, n=n) for k, m in enumerate(means)))


def figures():
    curves = plots.training_curves([{k: v for k, v in m.items() if k != "test_acc_exits"} for m in METRICS])
    return {
        "training_curves": curves,
        "accuracy_by_round": plots.accuracy_by_round([_row("kd · α=0.2", [90, 91, 92]), _row("kd · α=0.8", [89, 90])]),
        "id_vs_ood": plots.id_vs_ood([("A", "r1", 0, 90.0, 70.0, "kd"), ("A", "r1", 1, 91.0, 72.0, "kd"),
                                      ("B", "r2", 0, 88.0, 60.0, "kd")]),
        "loss_contours": plots.loss_contours({0: SURFACE, 1: SURFACE}),
        "loss_surface_3d": plots.loss_surface_3d(*SURFACE, zrange=(0.5, 2.0), name="teacher (round 0)"),
        "exit_bars": plots.exit_bars([80.0, 85.0, 90.0], 91.0, baseline=88.0),
        "curvature_bars": plots.curvature_bars([0, 1], [1.0, 2.0], [3.0, 4.0], [0.1, 0.2]),
    }


def _text_sizes(fig) -> dict[str, float]:
    """The font size of every text element plotly draws (axes, legend, hover, annotations, colour bars)."""
    lay = fig.layout
    sizes = {"font": lay.font.size, "legend": lay.legend.font.size, "hover": lay.hoverlabel.font.size}
    for i, ax in enumerate([*fig.select_xaxes(), *fig.select_yaxes()]):
        sizes[f"axis{i}.ticks"], sizes[f"axis{i}.title"] = ax.tickfont.size, ax.title.font.size
    for i, scene in enumerate(fig.select_scenes() if any(t.type == "surface" for t in fig.data) else ()):
        for a in ("xaxis", "yaxis", "zaxis"):
            sizes[f"scene{i}.{a}"] = scene[a].tickfont.size
    sizes.update({f"annotation{i}": a.font.size for i, a in enumerate(lay.annotations)})
    sizes.update({f"trace{i}.colorbar": t.colorbar.tickfont.size for i, t in enumerate(fig.data)
                  if t.type == "contour"})
    return sizes


@pytest.mark.parametrize("name", list(figures()))
def test_presentation_makes_every_text_at_least_20px_and_leaves_the_figure_alone(name):
    fig = figures()[name]
    before = fig.to_json()
    big = plots.presentation(fig, True)
    assert fig.to_json() == before  # a copy: the page's download keeps the normal size
    sizes = _text_sizes(big)
    assert all(s is not None and s >= 20 for s in sizes.values()), sizes
    assert big.layout.font.size > (fig.layout.font.size or 0)
    if name != "loss_surface_3d":  # a 3-D scene keeps its height: taller, it spills out of its column
        assert big.layout.height > (fig.layout.height or 450)


def test_presentation_thickens_lines_and_markers():
    fig = figures()["accuracy_by_round"]
    big = plots.presentation(fig)
    for small, large in zip(fig.data, big.data):
        assert large.line.width == pytest.approx(1.6 * small.line.width)
        assert large.marker.size == pytest.approx(1.5 * small.marker.size)
        assert large.error_y.thickness > 2
    unset = plots.presentation(plots.go.Figure(plots.go.Scatter(x=[1, 2], y=[1, 2], mode="lines+markers")))
    assert unset.data[0].line.width > 2 and unset.data[0].marker.size > 6  # plotly's defaults, grown


def test_presentation_off_is_the_figure_itself():
    fig = figures()["training_curves"]
    assert plots.presentation(fig, False) is fig
    assert fig.layout.font.size == 15  # normal mode keeps the 15 px base


def test_charts_leave_the_backgrounds_to_the_theme():
    """No white plot area of our own: under Streamlit's dark theme it would carry light text on white."""
    for name, fig in figures().items():
        assert fig.layout.plot_bgcolor is None and fig.layout.paper_bgcolor is None, name
    assert "white" not in plots.GRID and plots.GRID.startswith("rgba")


def test_download_html_is_white_and_carries_its_caption():
    fig = figures()["loss_surface_3d"]
    html = plots.figure_html(fig, "run 20260101-demo · demo · kd α=0.2 τ=4 · 2 students · 3 epochs")
    args = html.split("Plotly.newPlot(")[1].split(",", 1)[1].lstrip()  # after the div id: data, layout, config
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(args)
    spec = {"layout": decoder.raw_decode(args[end:].lstrip(", \n"))[0]}
    assert "run 20260101-demo" in html
    assert json.dumps("α=0.2 τ=4")[1:-1] in html  # plotly escapes non-ASCII in the embedded JSON
    assert spec["layout"]["template"]["layout"]["plot_bgcolor"] == "white"
    assert spec["layout"]["title"]["subtitle"]["text"] == "teacher (round 0)"  # the figure's own title follows
    assert spec["layout"]["height"] > fig.layout.height
    assert fig.layout.title.text == "teacher (round 0)"  # the page's figure is untouched
    assert "Plotly.newPlot" in plots.figure_html(fig)  # no caption: as before


def test_loss_surfaces_name_their_axes_delta_and_eta_and_look_into_the_bowl():
    f3 = figures()["loss_surface_3d"]
    scene = f3.layout.scene
    assert (scene.xaxis.title.text, scene.yaxis.title.text) == ("δ", "η")
    eye, up = scene.camera.eye, scene.camera.up
    assert (up.x, up.y, up.z) == (0, 0, 1) and eye.z > 0 and eye.x == eye.y > 0  # z up, above a corner
    assert 30 <= math.degrees(math.atan2(eye.z, math.hypot(eye.x, eye.y))) <= 45  # looking down into the bowl
    assert "δ" in f3.data[0].hovertemplate and "η" in f3.data[0].hovertemplate
    contours = figures()["loss_contours"]
    assert contours.layout.xaxis.title.text.startswith("δ") and contours.layout.xaxis2.title.text.startswith("δ")
    assert contours.layout.yaxis.title.text.startswith("η")
    assert "δ" in contours.data[0].hovertemplate and "η" in contours.data[0].hovertemplate
    line = plots.loss_lines({0: ([-1.0, 0.0, 1.0], [1.0, 0.5, 1.0])})
    assert "δ" in line.layout.xaxis.title.text
    for fig in (f3, contours, line):  # α is distillation's: no landscape label uses it, nor β
        assert "α" not in fig.to_json() and "β" not in fig.to_json()
        assert "\\u03b1" not in fig.to_json() and "\\u03b2" not in fig.to_json()


def _legend(fig) -> list:
    return [t for t in fig.data if t.showlegend is not False]


def test_compare_chart_has_one_legend_entry_per_configuration_in_its_own_colour_and_symbol():
    rows = [_row(f"config {i}", [90.0 + i, 91.0]) for i in range(9)]
    fig = plots.accuracy_by_round(rows)
    shown = _legend(fig)
    assert [t.name for t in shown] == [f"config {i} (n=2)" for i in range(9)]
    styles = [(t.line.color, t.marker.symbol) for t in shown]
    assert len(set(styles)) == 9 and len({c for c, _ in styles[:8]}) == 8
    assert all(t.marker.color == t.line.color for t in shown)  # the legend's icon is the config's colour


def test_id_vs_ood_has_one_legend_entry_per_configuration_and_tags_the_rounds():
    points = [("A", "r1", 0, 90.0, 70.0, "kd"), ("A", "r1", 1, 91.0, 72.0, "kd"), ("A", "r2", 0, 89.0, 69.0, "kd"),
              ("B", "r3", 0, 88.0, 60.0, "kd"), ("B", "r3", 2, 89.5, 61.0, "kd"), ("C", "r4", 0, 85.0, 50.0, "byot")]
    fig = plots.id_vs_ood(points)
    shown = _legend(fig)
    assert [t.name for t in shown] == ["A", "B", "C"]  # two runs of A (seeds): one entry
    assert len({t.marker.color for t in shown}) == 3 and len({t.marker.symbol for t in shown}) == 3
    r1 = next(t for t in fig.data if "r1 · teacher (round 0)" in t.customdata)
    assert list(r1.text) == ["T", "S1"] and list(r1.x) == [90.0, 91.0]  # rounds in order, joined by a line
    r3 = next(t for t in fig.data if t.customdata[0].startswith("r3"))
    assert list(r3.text) == ["T", "S2"]
    r4 = next(t for t in fig.data if t.customdata[0].startswith("r4"))
    assert list(r4.text) == [""]  # one network: no teacher to tag
    assert fig.layout.legend.title.text.startswith("T = teacher")


def test_config_summary_names_the_run_its_terms_network_data_and_length():
    assert config_summary(preset("demo")) == "demo · kd α=0 τ=4 · cnn · digits, 30% noise · 2 students · 15 epochs"
    assert config_summary(preset("demo").replace(rounds=1, epochs=1)).endswith("· 1 student · 1 epoch")
    assert config_summary(preset("demo-sam")) == \
        "demo-sam · kd α=0.2 τ=4 · cnn · SAM ρ=0.05 · digits, 30% noise · teacher only · 30 epochs"
    assert "· 2 peers ·" in config_summary(preset("demo-dml"))
    assert ("cnn +exits" in config_summary(preset("demo-byot"))
            and "· one network ·" in config_summary(preset("demo-byot")))


def test_flat_record_spreads_nested_dicts_and_lists_into_columns():
    assert flat_record({"a": 1, "g": {"x.w": 0.5, "y": {"z": 2}}, "l": [3, 4]}) == \
        {"a": 1, "g.x.w": 0.5, "g.y.z": 2, "l.0": 3, "l.1": 4}


def test_metrics_csv_has_a_numeric_column_per_layer_and_term():
    extra = [{"round": 2, "epoch": 1, "train_loss": 0.3, "only_here": 7.0}]  # a key other records lack
    rows = list(csv.DictReader(io.StringIO(records_csv(METRICS + extra))))
    cols = list(rows[0])
    assert {"grad_abs.sections.0.0.weight", "grad_abs.sections.1.1.0.weight", "train_parts.ce", "train_parts.kd",
            "test_acc_exits.0", "test_acc_exits.1", "only_here"} <= set(cols)
    assert "grad_abs" not in cols and "train_parts" not in cols
    for row in rows[:-1]:  # every cell a number (or empty: a column this record lacks), never a dict's repr
        assert all(float(v) == float(v) for c, v in row.items() if c != "only_here"), row
        assert row["only_here"] == ""
    assert float(rows[1]["grad_abs.sections.0.0.weight"]) == pytest.approx(0.04)
    assert rows[-1]["grad_abs.sections.0.0.weight"] == "" and rows[-1]["only_here"] == "7.0"


def test_rounds_table_vs_teacher_is_a_float_column_shown_with_arrows():
    from app.ui import delta_color, rounds_table

    summary = RunSummary.from_dict({"rounds": [{"round": 0, "test_acc": 90.0, "best_epoch": 3},
                                               {"round": 1, "test_acc": 91.5, "best_epoch": 2},
                                               {"round": 2, "test_acc": 89.25, "best_epoch": 3}]})
    table = rounds_table(summary, "kd")
    col = table.data["vs teacher (points)"]
    assert col.dtype == float and col.tolist() == [0.0, 1.5, -0.75]
    rows = list(csv.DictReader(io.StringIO(table.data.to_csv(index=False))))
    assert [r["vs teacher (points)"] for r in rows] == ["0.0", "1.5", "-0.75"]
    html = table.to_html()
    assert "↑ +1.50" in html and "↓ -0.75" in html and "—" in html and "= +0.00" not in html
    assert delta_color(1.5).startswith("color: #2b8a3e") and delta_color(-0.75).startswith("color: #c92a2a")
    assert delta_color(float("nan")) == "" and delta_color("↑ +1.00").startswith("color: #2b8a3e")
