"""Static figures: a plotly Figure as SVG, PDF or PNG, drawn by kaleido in a headless Chromium.

    export(fig, "svg")                       bytes of one figure (a dashboard download)
    write_figures({name: fig}, folder, "pdf")  files of many, one browser for all (``analyze --figures``)
    run_figures(run, ...)                    every figure of a run's training and cached analyses, by file name

Starting Chromium takes seconds, drawing a figure with it a fraction of one: one browser serves the whole process,
started on first use and closed once unused for ``IDLE_S``. What is drawn is ``plots.print_figure``: white
background, dark text, the figure's normal text size (not the presentation copy), the run's caption on top.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import html
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

from sdcore.analysis.compare import config_summary
from sdcore.files import first_line
from sdcore.plots import (
    ENSEMBLE_COLOR,
    curvature_bars,
    eigen_ecdf,
    exit_color,
    exit_name,
    loss_contours,
    loss_lines,
    loss_quantities,
    loss_surface_3d,
    noise_curves,
    print_figure,
    reliability_diagram,
    round_color,
    round_name,
    sharpness_curves,
    spectral_densities,
    training_curves,
    zrange,
)
from sdcore.runs import atomic_write_bytes

FORMATS = {"svg": "image/svg+xml", "pdf": "application/pdf", "png": "image/png"}
# PNG pixels per CSS pixel: a 900 px wide figure becomes 2700 px, 288 dpi at the size it has on screen (96 CSS px
# per inch), enough for print. SVG and PDF are vectors at the CSS size.
PNG_SCALE = 3
WIDTH, HEIGHT = 900, 450  # CSS px of a figure that sets no size (the dashboard stretches it to the page instead)
IDLE_S = 60.0  # s: the browser's memory is given back after this long unused; the next figure starts it again
TIMEOUT_S = 90.0  # a hang guard per figure (kaleido's own per-figure limit), plus the same for the start
MISSING = ("SVG/PDF/PNG export needs kaleido and Chromium: pip install kaleido; apt-get install -y chromium "
           "(or set SDLAB_CHROMIUM to a Chromium or Chrome binary)")
CHROMIUM_ENV = "SDLAB_CHROMIUM"  # the browser the browser tests drive too (tests/browser/conftest.py)


class ExportError(Exception):
    """A figure could not be drawn as SVG, PDF or PNG; the message is one line for a person."""


def unavailable() -> str | None:
    """Why no figure can be drawn here (``MISSING``), or None when kaleido is installed and a Chromium is found.
    Cheap: imports nothing heavy, starts nothing; a browser that is found but cannot start shows only when a
    figure is drawn."""
    if importlib.util.find_spec("kaleido") is None:
        return MISSING
    path = _chromium()
    return None if path and Path(path).is_file() else MISSING


def _chromium() -> str | None:
    """$SDLAB_CHROMIUM if set, else where kaleido looks: $BROWSER_PATH, PATH (chromium, google-chrome …), the
    usual install folders, its own download."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    try:
        from choreographer.browsers.chromium import Chromium  # noqa: PLC0415 - optional: kaleido's dependency
    except ImportError:
        return None
    return Chromium.find_browser(skip_local=False)


def export(fig: go.Figure, fmt: str, *, caption: str | None = None, scale: float = PNG_SCALE) -> bytes:
    """``fig`` as an SVG, PDF or PNG file's bytes; ``caption`` (plain text, e.g. "run <id> · demo · …") goes
    above it. PNG: ``scale`` pixels per CSS pixel. Raises ExportError (``MISSING`` when there is no kaleido or
    Chromium)."""
    return _BROWSER.draw([_job("the figure", fig, fmt, caption, scale)])[0]


def write_figures(figs: Mapping[str, go.Figure], folder: str | Path, fmt: str, *, caption: str | None = None,
                  scale: float = PNG_SCALE) -> list[Path]:
    """Each figure as ``folder/<name>.<fmt>`` (written atomically; the folder is made), drawn by one browser;
    returns the paths in the order of ``figs``. Raises ExportError naming the figure that failed, before any
    file is written."""
    folder = Path(folder)
    bad = [n for n in figs if not n or n.startswith(".") or "/" in n or "\\" in n or "\0" in n]
    if bad:
        raise ExportError(f"figure name {bad[0]!r} is not a plain file name")
    images = _BROWSER.draw([_job(name, fig, fmt, caption, scale) for name, fig in figs.items()])
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{fmt}" for name in figs]
    for path, data in zip(paths, images):
        atomic_write_bytes(path, data)
    return paths


def _job(label: str, fig: go.Figure, fmt: str, caption: str | None, scale: float) -> tuple[str, dict, dict]:
    """(label, figure dict, kaleido options) of one figure: the print version at an explicit size, so the file's
    size does not depend on a browser window (PNG: ``scale`` × that size in pixels)."""
    if fmt not in FORMATS:
        raise ExportError(f"figure format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not scale > 0:
        raise ExportError(f"figure scale must be positive, got {scale!r}")
    out = print_figure(fig, caption and html.escape(caption, quote=False))  # plotly renders <b>, <a> … in titles
    width = out.layout.width or WIDTH
    if caption:  # one line that fits the fixed width: a long config summary gets smaller type, not cut off
        out.layout.title.font.size = max(9, min(out.layout.title.font.size or 16, (width - 20) / (0.5 * len(caption))))
    opts = dict(format=fmt, width=width, height=out.layout.height or HEIGHT, scale=scale if fmt == "png" else 1)
    return label, out.to_dict(), opts


class _Browser:
    """One headless Chromium for the process, driven by kaleido on an event loop in a thread of its own, so any
    thread may draw (a Streamlit download runs in a worker thread) and figures are drawn one at a time. Started
    by the first figure; closed after ``IDLE_S`` without one, and at exit. A browser that dies is dropped and the
    figure tried once more on a fresh one."""

    def __init__(self) -> None:
        self._guard = threading.Lock()  # starts the loop's thread once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kaleido: Any = None  # kaleido.Kaleido, open; only the loop's thread touches it and what follows
        self._turn: asyncio.Lock | None = None
        self._idle: asyncio.TimerHandle | None = None

    def draw(self, jobs: Sequence[tuple[str, dict, dict]]) -> list[bytes]:
        future = asyncio.run_coroutine_threadsafe(self._draw_all(jobs), self._running_loop())
        try:
            return future.result(TIMEOUT_S * (len(jobs) + 1))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ExportError(f"drawing {len(jobs)} figure(s) took more than {TIMEOUT_S * (len(jobs) + 1):.0f} s: "
                              "Chromium hangs") from None

    def close(self) -> None:
        """Close the browser now (at exit; tests)."""
        if self._loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._close_now(), self._loop).result(10)
            except Exception:  # noqa: BLE001 -- best effort at exit: the browser dies with its pipe anyway
                pass

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="sdlab-figures", daemon=True).start()
                atexit.register(self.close)  # runs before daemon threads stop: the loop still serves it
            return self._loop

    async def _draw_all(self, jobs: Sequence[tuple[str, dict, dict]]) -> list[bytes]:
        self._turn = self._turn or asyncio.Lock()
        async with self._turn:
            if self._idle is not None:
                self._idle.cancel()
            try:
                return [await self._draw(*job) for job in jobs]
            finally:
                self._idle = asyncio.get_running_loop().call_later(
                    IDLE_S, lambda: asyncio.ensure_future(self._close_now()))

    async def _draw(self, label: str, fig: dict, opts: dict) -> bytes:
        for _ in range(2):
            fresh = self._kaleido is None
            if fresh:
                self._kaleido = await _open()
            try:
                return await self._kaleido.calc_fig(fig, opts=opts)
            except asyncio.CancelledError:  # the caller gave up (``draw``'s hang guard): its tab may never return
                await self._drop()
                raise
            except Exception as e:  # noqa: BLE001 -- kaleido raises many kinds; each ends as one line
                await self._drop()
                if fresh:
                    raise ExportError(f"{label}: drawing it as {opts['format'].upper()} failed: {first_line(e)}") \
                        from e
        raise AssertionError("unreachable: the second try is always on a fresh browser")

    async def _close_now(self) -> None:
        async with (self._turn or asyncio.Lock()):
            await self._drop()

    async def _drop(self) -> None:
        k, self._kaleido = self._kaleido, None
        if k is not None:
            try:
                await k.close()
            except Exception:  # noqa: BLE001 -- a browser that already died cannot be closed
                pass


async def _open() -> Any:
    """An open kaleido.Kaleido (one tab), or ExportError. No MathJax: it would be fetched from a CDN, and no
    figure here uses LaTeX."""
    try:
        import kaleido  # noqa: PLC0415 - optional, and ~0.2 s to import: only when a figure is drawn
        from kaleido.errors import ChromeNotFoundError  # noqa: PLC0415
    except ImportError:
        raise ExportError(MISSING) from None
    path = _chromium()
    if not path or not Path(path).is_file():
        raise ExportError(MISSING)
    try:
        k = kaleido.Kaleido(n=1, mathjax=False, timeout=TIMEOUT_S, path=path)
    except ChromeNotFoundError:
        raise ExportError(MISSING) from None
    try:
        await k.open()
    except Exception as e:  # noqa: BLE001
        try:
            await k.close()
        except Exception:  # noqa: BLE001
            pass
        why = e.args[0] if e.args and isinstance(e.args[0], str) else first_line(e)  # choreographer: a tuple
        raise ExportError(f"Chromium at {path} did not start ({why}): apt-get install -y chromium, or set "
                          f"{CHROMIUM_ENV} to a working Chromium or Chrome") from e
    return k


_BROWSER = _Browser()


def run_caption(run_id: str, cfg: Any | None) -> str:
    """"run <id> · demo · kd α=0.2 τ=4 · … · 30 epochs": the caption of a run's saved figures (the dashboard's too);
    the id alone when its config cannot be read."""
    return f"run {run_id}" + (f" · {config_summary(cfg)}" if cfg is not None else "")


def run_figures(run: Any, *, analyses: Mapping[tuple[str, Any], Any] | None = None,
                calibration: Sequence[Any] | None = None) -> dict[str, go.Figure]:
    """Every figure the dashboard draws from what ``run`` holds, by file name "<run-id>-<figure>" (the names of
    the pages' downloads): its training curves (and sharpness, if logged), then those of ``analyses`` (the
    result dict of ``analysis.runner.analyze``: curvature bars, spectral density, ECDF, loss lines, contours,
    3-D surfaces, teacher→student lines, weight noise) and of ``calibration`` (the reliability diagram)."""
    method, rid = run.config().method, run.id
    figs: dict[str, go.Figure] = {}
    metrics = run.metrics()
    if metrics:
        summary = run.summary()
        kept = {r.round: r.best_epoch for r in summary.rounds} if summary is not None else {}
        have = loss_quantities(metrics)
        figs[f"{rid}-curves"] = training_curves(metrics, method=method, loss=have[0] if have else "train_loss",
                                                kept=kept)
        sharp = sharpness_curves(metrics, method=method, kept=kept)
        if sharp is not None:
            figs[f"{rid}-sharpness"] = sharp
    figs.update({f"{rid}-{name}": fig for name, fig in _analysis_figures(analyses or {}, method).items()})
    if calibration:
        figs[f"{rid}-reliability"] = reliability_diagram(_reliability_curves(calibration, method))
    return figs


def _analysis_figures(results: Mapping[tuple[str, Any], Any], method: str) -> dict[str, go.Figure]:
    """As pages/hessian.py and pages/landscape.py draw them, for the rounds ``results`` holds."""
    of: dict[str, list[int]] = {}
    for kind, r in sorted(results):
        of.setdefault(kind, []).append(r)
    figs: dict[str, go.Figure] = {}
    if of.get("eigen") and of.get("trace"):
        ks = of["eigen"]
        trace = [results[("trace", k)] for k in ks]
        figs["curvature"] = curvature_bars(ks, [results[("eigen", k)].values[0] for k in ks], [t.trace for t in trace],
                                           [t.stderr for t in trace], method=method)
    if of.get("density"):
        figs["esd"] = spectral_densities({k: (results[("density", k)].grid, results[("density", k)].density)
                                          for k in of["density"]}, method=method)
    if of.get("eigen"):
        figs["ecdf"] = eigen_ecdf({k: results[("eigen", k)].values for k in of["eigen"]}, method=method)
    if of.get("line"):
        figs["loss-1d"] = loss_lines({k: (results[("line", k)].alphas, results[("line", k)].loss) for k in of["line"]},
                                     method=method)
    if of.get("surface"):
        surfaces = {k: (results[("surface", k)].alphas, results[("surface", k)].betas, results[("surface", k)].loss)
                    for k in of["surface"]}
        figs["loss-2d"] = loss_contours(surfaces, method=method)
        zr = zrange(surfaces)
        for k, surface in surfaces.items():
            figs[f"loss-3d-round{k}"] = loss_surface_3d(*surface, zrange=zr, name=round_name(k, method))
    if of.get("interp"):
        figs["interpolation"] = loss_lines(
            {k: (results[("interp", k)].alphas, results[("interp", k)].loss) for k in of["interp"]}, method=method,
            xaxis="t: weights (1 − t)·teacher + t·student (0 = teacher, 1 = student)")
    if of.get("flatness"):
        figs["noise"] = noise_curves({k: (results[("flatness", k)].sigmas, results[("flatness", k)].loss_mean,
                                          results[("flatness", k)].loss_std) for k in of["flatness"]}, method=method)
    return figs


def _reliability_curves(results: Sequence[Any], method: str) -> list[tuple[str, str, Any]]:
    """(name, colour, reliability) of each calibrated model, as pages/calibration.py names and colours them."""
    n_exits = sum(m.exit is not None for m in results)

    def name(m: Any) -> str:
        if m.ensemble:
            return "ensemble of exits"
        return round_name(m.round, method) if m.exit is None else exit_name(m.exit, n_exits)

    def color(m: Any) -> str:
        if m.ensemble:
            return ENSEMBLE_COLOR
        return round_color(m.round) if m.exit is None else exit_color(m.exit, n_exits)
    return [(name(m), color(m), m.report.reliability) for m in results]
