"""Static figures (sdcore.figures): SVG, PDF and PNG files that parse, at the size asked for, white whatever the
theme; one browser for many figures; one line when kaleido or Chromium is missing (library, CLI, dashboard).

The browser stays warm between the tests of this module (started once, ~2 s); the tests that need it closed
close it themselves."""
import io
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from sdcore import cli, figures, plots
from sdcore.config import preset

SVG = "{http://www.w3.org/2000/svg}"
APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
needs_chromium = pytest.mark.skipif(figures.unavailable() is not None, reason=figures.MISSING)


@pytest.fixture(scope="module", autouse=True)
def closed_at_the_end():
    yield
    figures._BROWSER.close()


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    """A finished demo run: a teacher and one student, one epoch on 200 examples."""
    return trained("demo", root=tmp_path_factory.mktemp("figure-runs"), epochs=1, rounds=1, **{"data.subset": 200})


def line_figure(**layout) -> go.Figure:
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 0, 1], name="teacher")).update_layout(**layout)


def parse_svg(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    assert root.tag == f"{SVG}svg"
    return root


def svg_texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def text_fills(data: bytes) -> set[str]:
    return set(re.findall(r'<text[^>]*style="[^"]*fill: (rgb\([^)]*\))', data.decode()))


def check_pdf(data: bytes) -> tuple[float, float]:
    """A minimal structural parse: header, trailer, a cross-reference table at startxref whose every in-use entry
    points at its object, exactly one page. Returns that page's MediaBox size in points."""
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    start = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data).group(1))
    assert data[start:start + 4] == b"xref"
    first, count = map(int, re.match(rb"xref\s+(\d+)\s+(\d+)", data[start:]).groups())
    entries = re.findall(rb"(\d{10}) (\d{5}) ([nf])", data[start:])[:count]
    assert len(entries) == count > 1
    for number, (offset, _, kind) in enumerate(entries, start=first):
        if kind == b"n":
            assert re.match(rb"%d 0 obj" % number, data[int(offset):]), f"xref entry {number} misses its object"
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 1
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", data).group(1).split()]
    return box[2] - box[0], box[3] - box[1]


@needs_chromium
def test_write_figures_starts_one_browser_for_all_and_names_the_files(tmp_path, monkeypatch):
    figures._BROWSER.close()
    opened = []
    real_open = figures._open

    async def counted():
        opened.append(1)
        return await real_open()
    monkeypatch.setattr(figures, "_open", counted)
    figs = {"r1-curves": line_figure(), "r1-noise": line_figure(height=200), "r1-esd": line_figure(width=300)}
    paths = figures.write_figures(figs, tmp_path / "figures", "png", scale=2)
    assert paths == [tmp_path / "figures" / f"{n}.png" for n in figs] and len(opened) == 1
    sizes = [Image.open(p).size for p in paths]
    assert sizes == [(2 * figures.WIDTH, 2 * figures.HEIGHT), (2 * figures.WIDTH, 400), (600, 2 * figures.HEIGHT)]
    assert not list((tmp_path / "figures").glob("*.tmp"))


@needs_chromium
def test_svg_pdf_png_parse_at_the_size_asked_for_white_with_the_caption():
    fig = line_figure(width=400, height=300, template="plotly_dark", title="own title")
    caption = "run 20260101-demo · kd α=0.2 <b>τ=4</b>"  # markup in a run name stays literal text
    band = 60  # print_figure's band for a caption above a figure with its own title
    svg = figures.export(fig, "svg", caption=caption)
    root = parse_svg(svg)
    assert (root.get("width"), root.get("height")) == ("400", str(300 + band))
    assert caption in svg_texts(root) and "own title" in svg_texts(root)
    background = next(root.iter(f"{SVG}rect"))
    assert "fill: rgb(255, 255, 255)" in background.get("style")  # plotly_dark's black is replaced
    assert text_fills(svg) and "rgb(255, 255, 255)" not in text_fills(svg)  # no white (dark-theme) text
    pdf = figures.export(fig, "pdf", caption=caption)
    assert check_pdf(pdf) == pytest.approx((400 * 0.75, (300 + band) * 0.75), abs=0.5)  # CSS px -> pt
    png = Image.open(io.BytesIO(figures.export(fig, "png", caption=caption)))
    png.load()
    assert png.format == "PNG" and png.size == (400 * figures.PNG_SCALE, (300 + band) * figures.PNG_SCALE)
    assert png.convert("RGB").getpixel((png.width - 2, png.height - 2)) == (255, 255, 255)
    assert fig.layout.template.layout.paper_bgcolor != "white" and fig.layout.title.text == "own title"  # untouched


@needs_chromium
def test_a_presentation_copy_exports_white_with_dark_text_at_the_default_size():
    shown = plots.presentation(plots.exit_bars([50.0, 60.0, 70.0], 72.0), True)  # what chart() draws
    svg = figures.export(shown, "svg")
    root = parse_svg(svg)
    assert root.get("width") == str(figures.WIDTH)  # no width of its own: the print default
    assert "fill: rgb(255, 255, 255)" in next(root.iter(f"{SVG}rect")).get("style")
    assert text_fills(svg) and "rgb(255, 255, 255)" not in text_fills(svg)


def test_bad_format_scale_or_name_is_one_line(tmp_path):
    with pytest.raises(figures.ExportError, match=r"^figure format must be one of svg, pdf, png, got 'eps'$"):
        figures.export(line_figure(), "eps")
    with pytest.raises(figures.ExportError, match="scale must be positive"):
        figures.export(line_figure(), "png", scale=0)
    with pytest.raises(figures.ExportError, match="not a plain file name"):
        figures.write_figures({"../escape": line_figure()}, tmp_path, "svg")
    assert not list(tmp_path.iterdir())


def test_run_figures_names_every_figure_the_pages_draw():
    """The analysis results a CLI call may hold, as the runner returns them: every figure, by its page's name."""
    line = SimpleNamespace(alphas=[-1.0, 0.0, 1.0], loss=[2.0, 1.0, 2.0])
    surface = SimpleNamespace(alphas=[-1.0, 1.0], betas=[-1.0, 1.0], loss=[[2.0, 1.5], [1.5, 2.5]])
    results = {}
    for k in (0, 1):
        results |= {("eigen", k): SimpleNamespace(values=[5.0 - k, 1.0]),
                    ("trace", k): SimpleNamespace(trace=9.0 - k, stderr=0.5),
                    ("density", k): SimpleNamespace(grid=[0.0, 1.0], density=[0.5, 0.5]),
                    ("line", k): line, ("surface", k): surface,
                    ("flatness", k): SimpleNamespace(sigmas=[0.0, 0.1], loss_mean=[1.0, 1.5], loss_std=[0.0, 0.1])}
    results[("interp", 1)] = line
    report = SimpleNamespace(reliability=SimpleNamespace(edges=[0.0, 1.0], count=[10], confidence=[0.5],
                                                         accuracy=[0.4]))
    calibration = [SimpleNamespace(round=k, exit=None, ensemble=False, report=report) for k in (0, 1)]
    fake = SimpleNamespace(id="r1", config=lambda: preset("demo"), metrics=lambda: [], summary=lambda: None)
    figs = figures.run_figures(fake, analyses=results, calibration=calibration)
    assert list(figs) == [f"r1-{n}" for n in ("curvature", "esd", "ecdf", "loss-1d", "loss-2d", "loss-3d-round0",
                                              "loss-3d-round1", "interpolation", "noise", "reliability")]
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert [t.name for t in figs["r1-loss-2d"].data if t.type == "contour"] == ["teacher (round 0)", "student 1"]
    assert figures.run_figures(fake) == {}  # no metrics, nothing analysed: nothing to draw


@pytest.mark.slow  # trains a tiny run (~8 s), then a 1-D landscape and calibration
@needs_chromium
def test_cli_analyze_figures_svg_writes_parseable_files_under_the_run(run, capsys):
    code = cli.main(["analyze", run.id, "--runs-dir", str(run.path.parent), "--calibration", "--landscape", "1d",
                     "--steps", "5", "--subset", "64", "--figures", "svg"])
    out = capsys.readouterr().out
    assert code == 0
    names = {f"{run.id}-{n}.svg" for n in ("curves", "loss-1d", "reliability")}
    assert {p.name for p in (run.path / "figures").iterdir()} == names
    for name in names:
        path = run.path / "figures" / name
        assert str(path) in out.splitlines()
        texts = svg_texts(parse_svg(path.read_bytes()))
        assert any(t.startswith(f"run {run.id} · demo · ") for t in texts)  # the run's caption


@pytest.mark.slow
@needs_chromium
def test_dashboard_offers_svg_pdf_png_on_demand_with_meaningful_names(run, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(run.path.parent))
    offered = {}
    real = st.download_button

    def recorded(label, data, file_name=None, *args, **kwargs):
        offered[file_name] = data
        return real(label, data, file_name, *args, **kwargs)
    monkeypatch.setattr(st, "download_button", recorded)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("../pages/live.py").run()
    assert not at.exception, at.exception
    chart = at.get("plotly_chart")[0].proto
    assert f'"filename": "{run.id}-curves"' in chart.config and '"format": "svg"' in chart.config  # the toolbar
    static = f"dl-fig-{run.id}-static"
    assert f"{run.id}-curves.html" in offered and f"{run.id}-curves.svg" not in offered  # closed: nothing drawn
    at.session_state[static] = True  # open the popover
    at.run()
    assert not at.exception and not at.error
    labels = [b.label for b in at.get("download_button")]
    assert {"SVG (vector)", "PDF (vector)", f"PNG ({figures.PNG_SCALE}× pixels: {96 * figures.PNG_SCALE} dpi)"} \
        <= set(labels)
    assert all(f"{run.id}-curves.{fmt}" in offered for fmt in figures.FORMATS)
    svg = offered[f"{run.id}-curves.svg"]()  # what a click makes, in Streamlit's worker thread
    assert any(t.startswith(f"run {run.id} · ") for t in svg_texts(parse_svg(svg)))
    monkeypatch.setenv(figures.CHROMIUM_ENV, "/no/chromium")
    at.run()
    assert [e.value for e in at.error] == [figures.MISSING]
    assert "SVG (vector)" not in [b.label for b in at.get("download_button")]


@pytest.mark.slow
def test_cli_without_chromium_refuses_before_computing(run, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(figures.CHROMIUM_ENV, str(tmp_path / "no-chromium"))
    before = sorted(p.name for p in run.path.rglob("*"))
    code = cli.main(["analyze", run.id, "--runs-dir", str(run.path.parent), "--flatness", "--figures", "png"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and err == f"error: {figures.MISSING}\n"
    assert sorted(p.name for p in run.path.rglob("*")) == before  # nothing computed, nothing written


@pytest.mark.slow  # closes one browser and starts another (~5 s on a busy 2-core machine)
@needs_chromium
def test_a_dead_browser_is_replaced_and_an_idle_one_closed(monkeypatch):
    figures.export(line_figure(), "svg")  # warm
    dead = figures._BROWSER._kaleido

    async def closed(*args, **kwargs):
        raise RuntimeError("the browser closed")  # as choreographer says when Chromium died
    monkeypatch.setattr(dead, "calc_fig", closed)
    monkeypatch.setattr(figures, "IDLE_S", 0.2)
    parse_svg(figures.export(line_figure(), "svg"))  # drawn by a fresh browser
    assert figures._BROWSER._kaleido not in (None, dead)
    deadline = time.monotonic() + 10
    while figures._BROWSER._kaleido is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert figures._BROWSER._kaleido is None  # closed once idle; the next figure starts another


@pytest.mark.parametrize("missing", ["kaleido", "chromium"])
def test_missing_kaleido_or_chromium_is_the_one_line(missing, monkeypatch, tmp_path):
    figures._BROWSER.close()  # a warm browser would still draw
    if missing == "kaleido":
        monkeypatch.setitem(sys.modules, "kaleido", None)  # `import kaleido` raises ImportError
    else:
        monkeypatch.setenv(figures.CHROMIUM_ENV, str(tmp_path / "no-chromium"))
    assert figures.unavailable() == figures.MISSING and "\n" not in figures.MISSING
    with pytest.raises(figures.ExportError) as e:
        figures.export(line_figure(), "svg")
    assert str(e.value) == figures.MISSING
    with pytest.raises(figures.ExportError):
        figures.write_figures({"a": line_figure()}, tmp_path / "out", "pdf")
    assert not (tmp_path / "out").exists()
