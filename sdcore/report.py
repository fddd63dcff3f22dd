"""One self-contained HTML file of a run (or of a sweep) that opens offline, anywhere.

    html = run_report(run)                          # str; run_report(run, pdf=True) -> PDF bytes (Chromium)
    html = sweep_report(store, sweep)
    path = write_report(store, "<run or sweep id>")  # `python -m sdcore report`: <run>/report.html

A run's report holds its header (id, name, status, dates, device), its config, the loss it minimizes, the
training curves Live draws, the rounds table, every analysis cached in its analysis/ folder, and what the
paper behind its method found beside what the run shows. A sweep's holds its grid, its trials and the
comparison Compare draws (mean ± std over seeds).

Offline by construction: plotly.js is inlined once (one ``<script>`` in the head; each figure is a div
and a ``Plotly.newPlot`` call), the loss formula is MathML (browsers draw it natively: no MathJax, no
font download), the styles are inline and the fonts the reader's own. Nothing is computed: analyses are
read from their records as they are, never recomputed; a record that is damaged, stale or of another
version is named in its section, and a section that cannot be built says why while the rest renders.
"""
from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.utils import PlotlyJSONEncoder

from sdcore import files, plots, provenance, terms
from sdcore import sweep as sw
from sdcore.analysis import registry, runner
from sdcore.analysis.calibration import describe
from sdcore.analysis.compare import compare_table, config_summary
from sdcore.analysis.story import verdicts
from sdcore.config import SEED003_ROWS, ConfigError, RunConfig, preset
from sdcore.files import FileProblem
from sdcore.paper import PAPER, SEED003_TABLE1, differences, run_columns
from sdcore.runs import Run, RunError, RunStore, RunSummary, atomic_write_bytes

# ---------------------------------------------------------------- LaTeX -> MathML (the formulas of sdcore.terms)
# A small translator for the LaTeX that terms.formula writes (aligned rows, fractions, sums, under-braces,
# accents, \mathrm, \text, spacing): MathML is drawn by Chromium, Firefox and Safari without any script,
# so the report needs no MathJax. A command it does not know is shown as an <merror> naming it (and counted
# in ``unknown``); tests/test_report.py renders every method's formula and asserts there is none.

_LETTERS = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "zeta": "ζ",
            "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π",
            "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
            "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Pi": "Π", "Sigma": "Σ", "Phi": "Φ",
            "Psi": "Ψ", "Omega": "Ω", "infty": "∞", "ell": "ℓ", "partial": "∂", "nabla": "∇"}
_OPERATORS = {"cdot": "⋅", "times": "×", "pm": "±", "ne": "≠", "neq": "≠", "le": "≤", "leq": "≤", "ge": "≥",
              "geq": "≥", "approx": "≈", "sim": "∼", "propto": "∝", "in": "∈", "to": "→", "rightarrow": "→",
              "leftarrow": "←", "mapsto": "↦", "lor": "∨", "land": "∧", "|": "‖", "lVert": "‖", "rVert": "‖",
              "Vert": "‖", "vert": "|", "lvert": "|", "rvert": "|", "mid": "∣", "langle": "⟨", "rangle": "⟩",
              "ldots": "…", "cdots": "⋯", "{": "{", "}": "}", "circ": "∘", "odot": "⊙"}
_LARGE = {"sum": "∑", "prod": "∏", "int": "∫"}  # limits under/over them in display style
_SPACES = {",": "0.1667em", ":": "0.2222em", ";": "0.2778em", " ": "0.3333em", "quad": "1em", "qquad": "2em",
           "!": "-0.1667em"}
_SIZES = {"big": "120%", "Big": "160%", "bigg": "210%", "Bigg": "260%"}  # \big( ... ; also \bigl, \bigr
_IGNORED = {"textstyle", "displaystyle", "left", "right", "limits", "nolimits", "label"}
_SCRIPT = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "𝒜ℬ𝒞𝒟ℰℱ𝒢ℋℐ𝒥𝒦ℒℳ𝒩𝒪𝒫𝒬ℛ𝒮𝒯𝒰𝒱𝒲𝒳𝒴𝒵"))
_FENCES = set("()[]|/")  # never stretched: a row holding a sum's limits would make them tall
_FENCE_COMMANDS = {"|", "lVert", "rVert", "Vert", "vert", "lvert", "rvert", "langle", "rangle"}
_ASCII_OPS = {"-": "−", "*": "∗", "'": "′"}
_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?|\s+|.", re.S)


class _TeX:
    """A recursive-descent reader of one LaTeX math string; ``expr()`` returns its MathML (inner elements)."""

    def __init__(self, tex: str):
        self.tokens = _TOKEN.findall(tex)
        self.i = 0
        self.unknown: list[str] = []
        self.text_style = False  # \textstyle: sums take their limits at the side until the row ends

    def peek(self) -> str | None:
        while self.i < len(self.tokens) and self.tokens[self.i].isspace():
            self.i += 1
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str | None:
        t = self.peek()
        self.i += t is not None
        return t

    def raw_group(self) -> str:
        """The text of the next {...} group as written (spaces kept), or of the next token."""
        if self.peek() != "{":
            return self.take() or ""
        self.take()
        depth, out = 1, []
        while self.i < len(self.tokens):
            t = self.tokens[self.i]
            self.i += 1
            depth += (t == "{") - (t == "}")
            if depth == 0:
                break
            out.append(t)
        return "".join(out)

    def expr(self, stops: frozenset[str] = frozenset()) -> str:
        items = []
        while (t := self.peek()) is not None and t not in stops and t != "}":
            items.append(self.scripts(*self.atom()))
        return "".join(items)

    def argument(self) -> str:
        """A command's or a script's argument: a {group} or a single atom."""
        if self.peek() == "{":
            self.take()
            inner = self.expr()
            self.take()  # "}"
            return f"<mrow>{inner}</mrow>"
        return self.atom()[0]

    def atom(self) -> tuple[str, bool]:
        """(MathML of the next atom, whether its scripts go under/over it)."""
        t = self.take()
        if t is None:  # the string ended where an argument was due ("x^")
            return "", False
        if t == "{":
            inner = self.expr()
            self.take()
            return f"<mrow>{inner}</mrow>", False
        if t.startswith("\\") and len(t) > 1:
            return self.command(t[1:])
        if t[0].isdigit():
            mantissa, _, exponent = t.partition("e")  # Python's 1e-06 (a weight written with :g): 1 × 10⁻⁶
            if not exponent:
                return f"<mn>{t}</mn>", False
            power = f"<msup><mn>10</mn><mn>{int(exponent)}</mn></msup>".replace("-", "−")
            return f"<mrow><mn>{mantissa}</mn><mo>×</mo>{power}</mrow>" if mantissa != "1" else power, False
        if t.isalpha():
            return f"<mi>{_esc(t)}</mi>", False
        if t in _FENCES:
            return f'<mo stretchy="false">{_esc(t)}</mo>', False
        if t in "^_":  # a script with no base (e.g. "{}^2")
            return self.scripts("<mrow></mrow>", False, first=t), False
        if t == "&":  # an alignment mark outside a table: nothing to align
            return "", False
        return f"<mo>{_esc(_ASCII_OPS.get(t, t))}</mo>", False

    def command(self, name: str) -> tuple[str, bool]:
        if name in _LETTERS:
            return f"<mi>{_LETTERS[name]}</mi>", False
        if name in _OPERATORS:
            fence = ' stretchy="false"' if name in _FENCE_COMMANDS else ""
            return f"<mo{fence}>{_OPERATORS[name]}</mo>", False
        if name in _LARGE:
            limits = not self.text_style
            # Enlarged by CSS, not largeop: largeop needs a math font's display variant, which most systems lack.
            return f'<mo class="large" largeop="false" movablelimits="false">{_LARGE[name]}</mo>', limits
        if name in _SPACES:
            return f'<mspace width="{_SPACES[name]}"></mspace>', False
        if name == "\\":  # a row break outside a table
            return "", False
        if name.rstrip("lr") in _SIZES:  # \big( \Bigl[ ...: a fixed, larger delimiter
            delim = self.take() or ""
            delim = _OPERATORS.get(delim[1:], delim[1:]) if delim.startswith("\\") else delim
            return f'<mo stretchy="false" style="font-size:{_SIZES[name.rstrip("lr")]}">{_esc(delim)}</mo>', False
        if name in _IGNORED:
            if name == "textstyle":
                self.text_style = True
            return "", False
        if name in ("mathrm", "operatorname", "mathit", "mathbf", "mathsf"):
            text = self.raw_group().strip()
            variant = {"mathbf": ' mathvariant="bold"'}.get(name, "")
            return (f"<mi{variant}>{_esc(text)}</mi>" if len(text) > 1 or name != "mathit"
                    else f"<mi>{_esc(text)}</mi>"), False
        if name == "mathcal":
            text = self.raw_group().strip()
            return f"<mi>{''.join(_SCRIPT.get(c, c) for c in text)}</mi>", False
        if name in ("text", "textrm", "mbox", "textit"):
            return f"<mtext>{_esc(self.raw_group())}</mtext>", False
        if name in ("frac", "tfrac", "dfrac"):
            num, den = self.argument(), self.argument()
            frac = f"<mfrac>{num}{den}</mfrac>"
            return (f'<mstyle displaystyle="false">{frac}</mstyle>' if name == "tfrac" else frac), False
        if name == "sqrt":
            return f"<msqrt>{self.argument()}</msqrt>", False
        if name in ("tilde", "widetilde", "hat", "widehat", "bar", "vec", "dot"):
            mark = {"tilde": "~", "widetilde": "~", "hat": "^", "widehat": "^", "bar": "¯", "vec": "→", "dot": "˙"}
            return f'<mover accent="true">{self.argument()}<mo>{mark[name]}</mo></mover>', False
        if name == "overline":  # a CSS rule: a stretched ‾ needs a math font too
            return f'<mrow class="overline">{self.argument()}</mrow>', False
        if name == "underbrace":  # a CSS bracket: a stretched ⏟ needs a math font the reader may not have
            return f'<munder><mrow class="brace">{self.argument()}</mrow></munder>', True
        if name == "begin":
            return self.table(self.raw_group().strip()), False
        if name in ("log", "exp", "max", "min", "arg", "argmax", "argmin", "softmax", "det", "tr"):
            return f"<mi>{name}</mi>", False
        self.unknown.append(f"\\{name}")
        return f"<merror><mtext>\\{_esc(name)}</mtext></merror>", False

    def table(self, env: str) -> str:
        """aligned/align/gathered/matrix: rows split at \\\\, cells at &; aligned's columns alternate right|left."""
        rows, cells = [], []
        stops = frozenset({"&", "\\\\", "\\end"})
        while True:
            self.text_style = False
            cells.append(self.expr(stops))
            t = self.take()
            if t == "&":
                continue
            rows.append(cells)
            cells = []
            if t != "\\\\":  # \end{env} (or the string ended)
                self.raw_group()
                break
        aligned = env.startswith("align")
        out = []
        for r in rows:
            # A relation or operator opening a right-hand cell (&=, &+) is binary there, as in LaTeX: spaced.
            r = [c.replace("<mo>", '<mo form="infix">', 1) if aligned and j % 2 and c.startswith("<mo>") else c
                 for j, c in enumerate(r)]
            tds = "".join(f'<mtd style="text-align:{("right" if j % 2 == 0 else "left") if aligned else "center"};'
                          f'padding:0.15em 0">{c}</mtd>' for j, c in enumerate(r))
            out.append(f"<mtr>{tds}</mtr>")
        return f'<mtable displaystyle="true">{"".join(out)}</mtable>'

    def scripts(self, base: str, limits: bool, first: str | None = None) -> str:
        sub = sup = None
        while (t := first or self.peek()) in ("_", "^"):
            if first is None:
                self.take()
            first = None
            arg = self.argument()
            if t == "_":
                sub = arg
            else:
                sup = arg
        if sub is None and sup is None:
            return base
        if base.startswith('<munder><mrow class="brace">') and sub:  # the brace's label goes under the bracket
            return f"{base[:-len('</munder>')]}{sub}</munder>"
        if limits:
            tag = "munderover" if sub and sup else "munder" if sub else "mover"
        else:
            tag = "msubsup" if sub and sup else "msub" if sub else "msup"
        return f"<{tag}>{base}{sub or ''}{sup or ''}</{tag}>"


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def mathml(tex: str, *, display: bool = True) -> tuple[str, list[str]]:
    """(``<math>`` element of the LaTeX ``tex``, the commands it did not know). ``display``: a block of its own."""
    reader = _TeX(tex)
    inner = reader.expr()
    while reader.peek() is not None:  # a stray "}": skip it, read on
        reader.take()
        inner += reader.expr()
    mode = ' display="block"' if display else ""
    return f'<math{mode}><semantics><mrow>{inner}</mrow><annotation encoding="application/x-tex">' \
           f"{_esc(tex)}</annotation></semantics></math>", reader.unknown


# ---------------------------------------------------------------- the page

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #212529;
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; line-height: 1.5; }
h1 { font-size: 1.9em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.45em; margin: 1.6em 0 0.5em; padding-bottom: 0.2em; border-bottom: 2px solid #dee2e6; }
h3 { font-size: 1.15em; margin: 1.3em 0 0.4em; }
.sub { color: #495057; margin: 0 0 0.8em; }
nav { margin: 0.8em 0 0; font-size: 0.95em; }
nav a { margin-right: 1.1em; color: #1c7ed6; text-decoration: none; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.93em; }
th, td { border: 1px solid #dee2e6; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f1f3f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.up { color: #2b8a3e; font-weight: 600; } td.down { color: #c92a2a; font-weight: 600; }
table.kv td:first-child { font-family: ui-monospace, "DejaVu Sans Mono", monospace; color: #495057; }
.note, .problem { border-left: 4px solid; padding: 0.5em 0.9em; margin: 0.6em 0; border-radius: 3px; }
.note { border-color: #74c0fc; background: #e7f5ff; }
.problem { border-color: #fa5252; background: #fff5f5; }
.caption { color: #495057; font-size: 0.92em; margin: 0.2em 0 1em; }
.chart { margin: 0.4em 0 0.8em; break-inside: avoid; }
math[display="block"] { font-size: 1.25em; margin: 0.8em 0; overflow-x: auto; }
math { font-family: "STIX Two Math", "Cambria Math", "Latin Modern Math", math, serif; }
mrow.brace { border: 1px solid currentColor; border-top: none; border-radius: 0 0 0.45em 0.45em;
             padding: 0 0.2em 0.2em; margin-bottom: 0.15em; }
mrow.overline { border-top: 1px solid currentColor; padding-top: 0.1em; }
mo.large { font-size: 150%; }
.cols { display: flex; flex-wrap: wrap; gap: 0 1.6em; align-items: flex-start; }
.cols h4 { margin: 0.3em 0 0; }
details { margin: 0.4em 0 1em; } summary { cursor: pointer; color: #495057; }
pre { background: #f8f9fa; padding: 0.6em; overflow-x: auto; font-size: 0.88em; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.92em; }
footer { margin-top: 3em; color: #868e96; font-size: 0.85em; }
@media print { body { max-width: none; padding: 0; } nav, .modebar { display: none; } h2 { break-after: avoid; }
               math[display="block"] { overflow: visible; } }
"""
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


class _Page:
    """The figures of one report: each a div with its own id and a Plotly.newPlot call (plotly.js and the white
    template are in the head). The figure's JSON goes to plotly.js as it is: applying a template in Python
    (``update_layout(template=...)``) took ~0.25 s a figure."""

    def __init__(self):
        self.figures = 0

    def figure(self, fig: go.Figure, caption: str = "") -> str:
        self.figures += 1
        d = fig.to_plotly_json()
        # Not the template the figure got on creation: in the dashboard's process that is Streamlit's, whose colours
        # are placeholders its frontend replaces. plotly_white is set in the page.
        layout = {k: v for k, v in d["layout"].items() if k != "template"}
        height = layout.get("height") or 450
        spec = _json({"data": d["data"], "layout": layout})
        div = (f'<div id="figure-{self.figures}" class="plotly-graph-div" style="width:100%;height:{height}px">'
               f'</div><script>(function () {{ var f = {spec}; f.layout.template = sdlabTemplate; '
               f'Plotly.newPlot("figure-{self.figures}", f.data, f.layout, {_json(PLOTLY_CONFIG)}); }})();</script>')
        return f'<div class="chart">{div}</div>' + (f'<p class="caption">{esc(caption)}</p>' if caption else "")


def _json(obj: Any) -> str:
    """JSON for inside a <script>: no "<" that could close it (a name with "</script>" in a legend)."""
    return json.dumps(obj, cls=PlotlyJSONEncoder, ensure_ascii=False).replace("<", "\\u003c")


@functools.cache
def _template() -> str:
    return _json(pio.templates["plotly_white"].to_plotly_json())


def text(s: Any) -> str:
    """Escaped text with **bold** and $LaTeX$ (inline MathML), as the registries' help texts are written."""
    parts = str(s).split("$")
    if len(parts) % 2 == 0:  # an odd number of $: no math in it
        parts = [str(s)]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(mathml(part, display=False)[0])
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def esc(s: Any) -> str:
    """Plain text (a run's name, a path, a value from a file) as HTML: nothing in it is markup."""
    return html.escape(str(s))


def _table(header: Iterable[str] | None, rows: Iterable[Iterable[Any]], *, cls: str = "", rich: bool = False) -> str:
    """An HTML table (``header`` None: none); a cell is text, or a (text, class, value) triple (class "num",
    "num up", ...; value: the exact number, kept in data-value). ``rich``: the cells' **bold** and $LaTeX$ are
    drawn (sdlab's own texts)."""
    show = text if rich else esc

    def cell(c: Any) -> str:
        if isinstance(c, tuple):
            shown, css, value = c
            data = f' data-value="{html.escape(repr(value))}"' if value is not None else ""
            return f'<td class="{css}"{data}>{show(shown)}</td>'
        return f"<td>{show(c)}</td>"
    head = "" if header is None else f"<thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr></thead>"
    body = "".join(f"<tr>{''.join(cell(c) for c in r)}</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}>{head}<tbody>{body}</tbody></table>"


def _num(value: float | None, fmt: str = ".2f", css: str = "num") -> tuple[str, str, Any] | str:
    return "–" if value is None else (format(value, fmt), css, value)


def _box(kind: str, body: str) -> str:
    return f'<div class="{kind}">{body}</div>'


# Section ids and headings, in the report's order; tests and the browser test look for these headings.
RUN_SECTIONS = {"config": "Configuration", "loss": "Loss", "curves": "Training curves", "rounds": "Rounds",
                "analyses": "Analyses", "paper": "What the paper found vs what this run shows"}
SWEEP_SECTIONS = {"grid": "Grid", "loss": "Loss", "trials": "Trials",
                  "comparison": "Comparison (mean ± std over seeds)"}


def _section(sid: str, title: str, build: Callable[[], str]) -> str:
    """A section; if building it fails (a file damaged in a way no reader expected), it says so, and the
    report goes on."""
    try:
        body = build()
    except Exception as e:  # noqa: BLE001 - one broken section must never cost the others
        body = _box("problem", f"This section could not be built: {esc(type(e).__name__)}: "
                               f"{esc(files.first_line(e))}")
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def _document(title: str, header: str, sections: dict[str, str], body: list[str], source: str) -> str:
    nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t in sections.items())
    made = time.strftime("%Y-%m-%d %H:%M")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script>"
            f"<script>var sdlabTemplate = {_template()};</script></head>"
            f"<body>{header}<nav>{nav}</nav>{''.join(body)}"
            f"<footer>Written by sdlab on {made} from {html.escape(source)}; nothing in this file is fetched from "
            "the network.</footer></body></html>\n")


# ---------------------------------------------------------------- header, config, loss

def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _config_table(cfg: RunConfig) -> str:
    """The resolved config as it is in config.json: the top-level fields, then data, model, optim side by side."""
    d = cfg.to_dict()
    groups = {"run": {k: v for k, v in d.items() if not isinstance(v, dict)}}
    groups |= {k: v for k, v in d.items() if isinstance(v, dict)}
    tables = [f"<div><h4>{html.escape(name)}</h4>"
              + _table(("field", "value"), [(k, json.dumps(v, ensure_ascii=False)) for k, v in _flat(fields)],
                       cls="kv") + "</div>" for name, fields in groups.items()]
    return f'<div class="cols">{"".join(tables)}</div>'


def _loss(cfg: RunConfig) -> str:
    """The method's whole loss with the config's numbers (as the Train page shows it) and its symbols."""
    used = terms.terms_of(cfg)
    formula, unknown = mathml(terms.formula(cfg))
    parts = [f"<p>Method <strong>{html.escape(terms.label(cfg.method))}</strong> "
             f"(<code>{html.escape(cfg.method)}</code>), with the config's numbers:</p>", formula]
    if unknown:
        parts.append(_box("problem", "The formula uses LaTeX this report cannot draw: "
                          f"{html.escape(', '.join(unknown))} (its source is below)."))
    rows = [(t.label, t.source, t.symbols) for t in [terms.TERMS["ce"]] + [terms.TERMS[t] for t in used]]
    parts.append(_table(("term", "source", "symbols"), rows, rich=True))
    parts.append(f"<details><summary>LaTeX source</summary><pre>{html.escape(terms.formula(cfg))}</pre></details>")
    return "".join(parts)


# ---------------------------------------------------------------- cached analyses, read as they are

@dataclass(frozen=True)
class Record:
    """One file of a run's analysis/ folder, read and checked but never recomputed."""
    file: str  # its name in analysis/
    kind: str  # the analysis kind it holds ("" when not even that can be read)
    settings: dict[str, Any]  # what its numbers depend on (the cache key's)
    round: int | None  # the analysed round of a per-round (curvature / landscape) record
    result: Any  # the kind's result as its readers get it; None when ``problem`` says why not
    problem: str = ""  # why it is not shown ("damaged: …", "stale: …", "written by version …"); "" if it is
    device: str = ""
    seconds: float | None = None
    created: str = ""


def _kind_of_name(stem: str, known: Iterable[str]) -> str:
    """The kind a record's file name starts with ("eigen-0-<hash>" -> "eigen"), for a file that cannot be read."""
    return max((k for k in known if stem.startswith(f"{k}-")), key=len, default="")


def read_records(run: Run) -> list[Record]:
    """Every analysis record of ``run`` (per-round curvature and landscape records, and the registry's kinds),
    in file-name order, each with its result or the reason it has none. Reads JSON and sidecars only."""
    from sdcore.analysis import registry, runner  # noqa: PLC0415 - imports every analysis module

    folder = run.path / "analysis"
    if not folder.is_dir() or folder.is_symlink():
        return []
    known = list(runner.RESULT_TYPES) + registry.kinds()
    try:
        finished = run.finished_rounds()
    except RunError:
        finished = None
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            obj = files.read_json_object(path)
        except FileProblem as e:
            out.append(Record(path.name, _kind_of_name(path.stem, known), {}, None, None, f"damaged: {e}"))
            continue
        kind = obj.get("kind") if isinstance(obj.get("kind"), str) else _kind_of_name(path.stem, known)
        base = dict(file=path.name, kind=kind, settings=obj.get("settings") if isinstance(obj.get("settings"), dict)
                    else {}, round=obj.get("round") if isinstance(obj.get("round"), int) else None,
                    device=str(obj.get("device", "")), created=str(obj.get("created", "")),
                    seconds=obj.get("seconds") if isinstance(obj.get("seconds"), (int, float)) else None)
        try:
            result = _load(run, path, obj, kind, base, finished)
        except _Unusable as e:
            out.append(Record(**base, result=None, problem=str(e)))
            continue
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:  # FileProblem is a ValueError
            out.append(Record(**base, result=None, problem=f"damaged: {files.first_line(e)}"))
            continue
        out.append(Record(**base, result=result))
    return out


class _Unusable(Exception):
    """A record that reads but cannot be shown as this run's: stale, another version, an unknown kind."""


def _load(run: Run, path: Path, obj: dict[str, Any], kind: str, base: dict[str, Any],
          finished: list[int] | None) -> Any:

    if kind in runner.RESULT_TYPES:
        if base["round"] is None or "result" not in obj:
            raise _Unusable("damaged: it lacks its round or its result")
        if finished is not None and base["round"] not in finished:
            raise _Unusable(f"stale: round {base['round']} is not a finished round of the run now")
        hit = runner.cached(run, kind, base["round"], base["settings"])
        if hit is None:
            raise _Unusable("damaged or written by another sdlab version: its page computes it again")
        return hit
    if kind not in registry.kinds():
        raise _Unusable(f"an analysis kind this sdlab does not know ({kind or 'none named'})")
    entry = registry.get(kind)
    if obj.get("version", 1) != entry.version:
        raise _Unusable(f"written by version {obj.get('version', 1)} of this analysis, this sdlab reads version "
                        f"{entry.version}: its page computes it again")
    if finished is not None and obj.get("finished_rounds") != finished:
        raise _Unusable(f"stale: computed when rounds {obj.get('finished_rounds')} were finished; the run has "
                        f"{finished} now (its page computes it again)")
    raw = obj["result"]
    if entry.sidecar:
        if raw != {"sidecar": path.with_suffix(".pt").name}:
            raise _Unusable("damaged: it does not point at its tensors file")
        tensors = files.load_torch(path.with_suffix(".pt"))
        if not isinstance(tensors, dict) or tensors.get("finished_rounds") != obj.get("finished_rounds"):
            raise _Unusable(f"stale: {path.with_suffix('.pt').name} belongs to another record")
        return entry.load(tensors)
    return entry.load(raw)


@dataclass(frozen=True)
class _Ctx:
    run: Run
    cfg: RunConfig
    summary: RunSummary | None
    page: _Page

    @property
    def method(self) -> str:
        return self.cfg.method

    def name(self, k: int) -> str:
        return plots.round_name(k, self.method)

    def acc(self, k: int) -> float | None:
        rounds = self.summary.rounds if self.summary is not None else ()
        return next((r.test_acc for r in rounds if r.round == k), None)


def _about(r: Record) -> str:
    """Where a record's numbers come from: its settings, device, time and file."""
    settings = ", ".join(f"{k} {json.dumps(v)}" for k, v in r.settings.items()) or "defaults"
    took = f" in {r.seconds:.1f} s" if r.seconds is not None else ""
    return (f"Settings: {settings}. Computed on {r.device or 'an unrecorded device'}{took}"
            f"{', ' + r.created.replace('T', ' ')[:16] if r.created else ''}; analysis/{r.file}.")


def _grouped(records: list[Record], key: Callable[[Record], Any]) -> list[list[Record]]:
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(json.dumps(key(r), sort_keys=True, default=str), []).append(r)
    return list(groups.values())


def _curvature(records: list[Record], ctx: _Ctx) -> str:
    """λ_max, top eigenvalues, trace and density per round, grouped by the training subset they used."""
    out = []
    for group in _grouped(records, lambda r: (r.settings.get("subset"), r.settings.get("seed"))):
        pick: dict[tuple[str, int], Record] = {}
        for r in sorted(group, key=lambda r: json.dumps(r.settings, sort_keys=True)):
            pick[(r.kind, r.round)] = r  # one per (kind, round) of a group: the last by settings
        rounds = sorted({k for _, k in pick})
        eig = {k: pick[("eigen", k)].result for k in rounds if ("eigen", k) in pick}
        tr = {k: pick[("trace", k)].result for k in rounds if ("trace", k) in pick}
        den = {k: pick[("density", k)].result for k in rounds if ("density", k) in pick}
        rows = [(ctx.name(k), _num(eig[k].values[0], ".4g") if k in eig else "–",
                 ", ".join(f"{v:.3g}" for v in eig[k].values) if k in eig else "–",
                 (f"{tr[k].trace:.4g} ± {tr[k].stderr:.2g}", "num", tr[k].trace) if k in tr else "–",
                 _num(ctx.acc(k))) for k in rounds]
        s = group[0].settings
        out.append(f"<p>On {s.get('subset')} training examples (seed {s.get('seed')}), BatchNorm in eval mode, at "
                   "each round's kept weights.</p>")
        out.append(_table(("model", "λ_max", "top eigenvalues", "trace ± std. error", "test accuracy (%)"), rows))
        both = [k for k in rounds if k in eig and k in tr]
        if both:
            out.append(ctx.page.figure(plots.curvature_bars(
                both, [eig[k].values[0] for k in both], [tr[k].trace for k in both], [tr[k].stderr for k in both],
                method=ctx.method), "λ_max (the sharpest direction) and trace (the total curvature) of the training "
                                    "loss's Hessian."))
        if den:
            out.append(ctx.page.figure(plots.spectral_densities({k: (d.grid, d.density) for k, d in den.items()},
                                                                method=ctx.method),
                                       "Eigen-spectral density (stochastic Lanczos quadrature), log axis."))
        if any(len(e.values) > 1 for e in eig.values()):
            out.append(ctx.page.figure(plots.eigen_ecdf({k: e.values for k, e in eig.items()}, method=ctx.method),
                                       "ECDF of the top eigenvalues: further right is sharper."))
        out.append(f'<details><summary>Where these numbers come from ({len(pick)} records)</summary>'
                   + "".join(f'<p class="caption">{esc(_about(r))}</p>' for r in pick.values()) + "</details>")
    return "".join(out)


_SURFACE_TITLES = {"line": "Loss along a random filter-normalized direction",
                   "surface": "2D loss contours (one colour scale for all rounds)",
                   "interp": "From the teacher to each student", "flatness": "Under Gaussian weight noise"}


def _landscape(records: list[Record], ctx: _Ctx) -> str:
    out = []
    for group in _grouped(records, lambda r: (r.kind, r.settings)):
        kind, by_round = group[0].kind, {r.round: r.result for r in sorted(group, key=lambda r: r.round)}
        out.append(f"<h4>{html.escape(_SURFACE_TITLES[kind])}</h4>")
        if kind == "line":
            fig = plots.loss_lines({k: (v.alphas, v.loss) for k, v in by_round.items()}, method=ctx.method)
        elif kind == "interp":
            fig = plots.loss_lines({k: (v.alphas, v.loss) for k, v in by_round.items()}, method=ctx.method,
                                   xaxis="t: weights (1 − t)·teacher + t·student (0 = teacher, 1 = student)")
        elif kind == "surface":
            fig = plots.loss_contours({k: (v.alphas, v.betas, v.loss) for k, v in by_round.items()},
                                      method=ctx.method)
        else:
            fig = plots.noise_curves({k: (v.sigmas, v.loss_mean, v.loss_std) for k, v in by_round.items()},
                                     method=ctx.method)
        if kind != "flatness":
            rows = []
            for k, v in by_round.items():
                flat = [x for row in v.loss for x in row] if kind == "surface" else list(v.loss)
                flat = [x for x in flat if x is not None]
                rows.append((ctx.name(k), _num(min(flat), ".4g"), _num(max(flat), ".4g")))
            out.append(_table(("model", "lowest loss on the grid", "highest"), rows))
        out.append(ctx.page.figure(fig, _about(group[0])))
    return "".join(out)


def _calibration(records: list[Record], ctx: _Ctx) -> str:

    out = []
    for r in records:
        results = r.result
        n_exits = len([m for m in results if m.exit is not None and not m.ensemble])
        style = {id(m): _model_style(m, n_exits, ctx) for m in results}
        rows = [(style[id(m)][0], _num(m.report.top1_err), _num(m.report.top5_err), _num(m.report.nll, ".3f"),
                 _num(100 * m.report.ece), _num(m.report.brier, ".3f"), _num(1000 * m.report.aurc),
                 _num(1000 * m.report.eaurc)) for m in results]
        if results:
            rep = results[0].report
            out.append(f"<p>Test split, {rep.examples:,} images; {esc(describe(rep.convention, rep.n_bins))}. "
                       "Lower is better in every column.</p>")
        out.append(_table(("model", "top-1 error (%)", "top-5 error (%)", "NLL", "ECE (%)", "Brier", "AURC (×10³)",
                           "E-AURC (×10³)"), rows))
        if results:
            out.append(ctx.page.figure(plots.reliability_diagram([(*style[id(m)], m.report.reliability)
                                                                  for m in results]), _about(r)))
    return "".join(out)


def _model_style(m: Any, n_exits: int, ctx: _Ctx) -> tuple[str, str]:
    """(name, colour) of one calibrated model: a round, one of its exits, or the exits' ensemble."""
    if m.ensemble:
        return "ensemble of exits", plots.ENSEMBLE_COLOR
    if m.exit is None:
        return ctx.name(m.round), plots.round_color(m.round)
    return plots.exit_name(m.exit, n_exits), plots.exit_color(m.exit, n_exits)


def _robustness(records: list[Record], ctx: _Ctx) -> str:
    out = []
    for r in records:
        rows = [(ctx.name(x.round), _num(x.clean), _num(x.mean_corrupted), _num(100 * x.mean_corrupted / x.clean
                                                                               if x.clean else None))
                for x in r.result]
        out.append(_table(("model", "clean test accuracy (%)", "mean over corruptions (%)",
                           "kept under corruption (%)"), rows))
        if r.result:
            out.append(ctx.page.figure(plots.corruption_curves(r.result, method=ctx.method), _about(r)))
    return "".join(out)


def _agreement(records: list[Record], ctx: _Ctx) -> str:
    return "".join(_table(("model", "agreement with the teacher (%)", "test accuracy (%)"),
                          [(ctx.name(a.round), _num(a.agreement), _num(a.test_acc)) for a in r.result])
                   + f'<p class="caption">{esc(_about(r))}</p>' for r in records)


def _teacher_student(records: list[Record], ctx: _Ctx) -> str:
    out = []
    for r in records:
        pairs = r.result.pairs if r.result is not None else []
        out.append(_table(("model", "its teacher", "logit MSE to it", "KL(teacher ‖ student)",
                           "agreement with it (%)", "agreement with round 0 (%)", "test accuracy (%)",
                           "fixed (right now, teacher wrong)", "broken (wrong now, teacher right)"),
                          [(ctx.name(p.round), ctx.name(p.round - 1), _num(p.logit_mse, ".4g"), _num(p.kl, ".4g"),
                            _num(p.agreement_prev), _num(p.agreement_teacher), _num(p.test_acc),
                            _num(len(p.fixed), "d"), _num(len(p.broken), "d")) for p in pairs]))
        if pairs:
            out.append(ctx.page.figure(plots.logit_distances([p.round for p in pairs], [p.logit_mse for p in pairs],
                                                             [p.kl for p in pairs]),
                                       "How far each student moved from its own teacher."))
            out.append(ctx.page.figure(plots.class_deltas(r.result.class_names,
                                                          {p.round: p.class_delta for p in pairs}),
                                       "Per-class test accuracy of each student minus the teacher's. " + _about(r)))
    return "".join(out)


def _exit_features(records: list[Record], ctx: _Ctx) -> str:
    out = []
    for r in records:
        n = len(r.result)
        out.append(_table(("exit", "SSE (within classes)", "SSB (between classes)", "SSE/SSB",
                           "variance on the 2 components (%)"),
                          [(plots.exit_name(e.exit, n), _num(e.separation.sse, ".4g"), _num(e.separation.ssb, ".4g"),
                            _num(e.separation.ratio, ".4g"), _num(100 * e.explained, ".1f")) for e in r.result]))
        if r.result:
            fig = plots.exit_pca(r.result, r.result[0].class_names).to_dict()
            for trace in fig["data"]:  # WebGL may be missing where the file is opened (a headless print): SVG
                if trace.get("type") == "scattergl":
                    trace["type"] = "scatter"
            out.append(ctx.page.figure(go.Figure(fig), "Each exit's test features on their top two principal "
                                                       "components, coloured by class. " + _about(r)))
    return "".join(out)


def _exit_latency(records: list[Record], ctx: _Ctx) -> str:
    out = []
    for r in records:
        res, n = r.result, len(r.result["ms"])
        accs = list(res.get("test_acc_exits") or [])
        out.append(_table(("exit", f"latency per batch of {res['batch_size']} (ms, median)", "test accuracy (%)"),
                          [(plots.exit_name(i, n), _num(ms, ".3g"), _num(accs[i] if i < len(accs) else None))
                           for i, ms in enumerate(res["ms"])]))
        if len(accs) == n and n:
            out.append(ctx.page.figure(plots.latency_scatter(res["ms"], accs, batch_size=res["batch_size"],
                                                             device=str(res.get("device", r.device))), _about(r)))
    return "".join(out)


def _test_logits(records: list[Record], ctx: _Ctx) -> str:
    return "".join(f"<p>Test-split logits of {len(r.result[0])} round(s), {len(r.result[1]):,} examples: what "
                   f"Compare's ensembles average.</p><p class=\"caption\">{esc(_about(r))}</p>" for r in records)


def _gallery(records: list[Record], ctx: _Ctx) -> str:
    return "".join(f"<p>{len(r.result.images)} test images the rounds disagree on (the Teacher vs students page "
                   f"shows them).</p><p class=\"caption\">{esc(_about(r))}</p>" for r in records)


def _cached(records: list[Record], ctx: _Ctx) -> str:
    """A kind this report has no view of (registered after it was written): that it is cached, and how."""
    return "".join(f'<p class="caption">Cached. {esc(_about(r))}</p>' for r in records)


# The report's view of each analysis: (title, kinds, renderer); registry kinds without one get ``_cached``.
_VIEWS: list[tuple[str, tuple[str, ...], Callable[[list[Record], _Ctx], str]]] = [
    ("Hessian curvature", ("eigen", "trace", "density"), _curvature),
    ("Loss surface and flatness", ("line", "surface", "interp", "flatness"), _landscape),
]
_KIND_VIEWS = {"calibration": _calibration, "robustness": _robustness, "agreement": _agreement,
               "teacher_student": _teacher_student, "exit_features": _exit_features, "exit_latency": _exit_latency,
               "test_logits": _test_logits, "gallery": _gallery}


def _not_applicable(run: Run, kind: str) -> str:
    """Why a registry kind can never be computed for ``run`` ("" if it can)."""

    try:
        return "" if registry.get(kind).applies(run) else "nothing to compute for this run"
    except (RunError, ConfigError) as e:
        return str(e)


def _analyses(ctx: _Ctx, records: list[Record]) -> str:

    views = _VIEWS + [(registry.get(k).label, (k,), _KIND_VIEWS.get(k, _cached)) for k in registry.kinds()]
    parts = [_box("note", f"Read from the run's <code>analysis/</code> folder as they are: nothing was computed "
                          f"for this report. {len(records)} record(s) found.")]
    missing, never = [], []
    shown = set()
    for title, kinds, view in views:
        recs = [r for r in records if r.kind in kinds]
        shown.update(kinds)
        if not recs:
            why = _not_applicable(ctx.run, kinds[0]) if kinds[0] in registry.kinds() else ""
            (never if why else missing).append((title, why))
            continue
        body = [_box("problem", f"<strong>analysis/{html.escape(r.file)}</strong>: {esc(r.problem)}")
                for r in recs if r.problem]
        good = [r for r in recs if not r.problem]
        if good:
            try:
                body.append(view(good, ctx))
            except Exception as e:  # noqa: BLE001 - a record that loads but not as its view expects: name it
                body.append(_box("problem", f"These records could not be shown: {esc(type(e).__name__)}: "
                                            f"{esc(files.first_line(e))}"))
        parts.append(f"<h3>{html.escape(_capital(title))}</h3>{''.join(body)}")
    other = [r for r in records if r.kind not in shown]
    if other:
        parts.append("<h3>Other records</h3>" + "".join(
            _box("problem", f"<strong>analysis/{html.escape(r.file)}</strong>: {esc(r.problem or 'not shown')}")
            for r in other))
    if missing:
        parts.append(f"<h3>Not computed</h3><p>{html.escape(_capital(', '.join(t for t, _ in missing)))}. Compute "
                     "them on "
                     "their pages of the dashboard (or the curvature and loss surfaces with "
                     f"<code>python -m sdcore analyze {html.escape(ctx.run.id)}</code>); a new report then holds "
                     "them.</p>")
    if never:
        parts.append("<h3>Not applicable to this run</h3>"
                     + _table(("analysis", "why"), [(_capital(t), why) for t, why in never]))
    return "".join(parts)


def _capital(s: str) -> str:
    return s[:1].upper() + s[1:]


# ---------------------------------------------------------------- curves and rounds (what Live shows)

def _curves(ctx: _Ctx, metrics: list[dict[str, Any]]) -> str:
    if not metrics:
        return "<p>No epoch has finished yet.</p>"
    kept = {r.round: r.best_epoch for r in ctx.summary.rounds} if ctx.summary is not None else {}
    if any("test_acc_exits" in m for m in metrics):
        about = ("Left: the training objective per epoch, each term's weighted share of it dotted (they add up to it). "
                 "Right: each exit's test accuracy, shallow (light) to deep (dark), and their ensemble.")
    elif any("test_acc_peers" in m for m in metrics):
        about = "Left: the peers' training loss per epoch. Right: each peer's test accuracy and their ensemble's."
    else:
        about = ("Left: the training loss per epoch (the cross-entropy against the training labels where logged, "
                 "the same quantity for every round). Right: test accuracy (solid) and validation (dotted). ★ marks "
                 "the epoch each round kept: the rounds table reports its model.")
    out = [ctx.page.figure(plots.training_curves(metrics, method=ctx.method, kept=kept), about)]
    sharp = plots.sharpness_curves(metrics, method=ctx.method, kept=kept)
    if sharp is not None:
        out.append(ctx.page.figure(sharp, "λ_max of each round's training loss after every epoch, beside its test "
                                          "accuracy."))
    rounds = ctx.summary.rounds if ctx.summary is not None else ()
    if rounds and rounds[0].exit_accs:
        out.append(ctx.page.figure(plots.exit_bars(rounds[0].exit_accs, rounds[0].ensemble_acc),
                                   "Final test accuracy of each exit and of their ensemble."))
    return "".join(out)


def _rounds(ctx: _Ctx) -> str:
    """Per finished round: its kept model's test accuracy, the change against the teacher, the kept epoch, and
    the exits' / peers' accuracies where the method has them (exact values in each cell's data-value)."""
    summary = ctx.summary
    if summary is None or not summary.rounds:
        return "<p>No round has finished yet.</p>"
    rounds, teacher = summary.rounds, summary.rounds[0].test_acc
    val = any("acc" in r.val for r in rounds)
    exits = max(len(r.exit_accs) for r in rounds)
    peers = max(len(r.peer_accs) for r in rounds)
    ensemble = any(r.ensemble_acc is not None for r in rounds)
    header = ["round", "model", "test accuracy (%)"] + (["vs teacher (points)"] if len(rounds) > 1 else []) \
        + ["kept epoch"] + (["validation accuracy (%)"] if val else []) \
        + [f"exit {i + 1}{' (deepest)' if i == exits - 1 else ''} (%)" for i in range(exits)] \
        + [f"peer {i + 1} (%)" for i in range(peers)] + (["ensemble (%)"] if ensemble else [])
    rows = []
    for r in rounds:
        delta = r.test_acc - teacher
        row = [str(r.round), ctx.name(r.round), _num(r.test_acc)]
        if len(rounds) > 1:
            row.append("—" if r.round == 0 else
                       (f"{'↑' if delta > 0 else '↓' if delta < 0 else '='} {delta:+.2f}",
                        "num up" if delta > 0 else "num down" if delta < 0 else "num", delta))
        row.append(_num(r.best_epoch, "d"))
        if val:
            row.append(_num(r.val.get("acc")))
        row += [_num(r.exit_accs[i] if i < len(r.exit_accs) else None) for i in range(exits)]
        row += [_num(r.peer_accs[i] if i < len(r.peer_accs) else None) for i in range(peers)]
        if ensemble:
            row.append(_num(r.ensemble_acc))
        rows.append(row)
    status = "every round finished" if summary.complete else "not every round has finished"
    noisy = f"; {summary.noisy_train_labels:,} training labels flipped by the label noise" \
        if summary.noisy_train_labels else ""
    return _table(header, rows) + f'<p class="caption">From summary.json ({status}{noisy}). Test accuracy of the ' \
                                  "model each round kept.</p>"


# ---------------------------------------------------------------- what the paper found vs what the run shows

def _finding(term: str) -> str:
    """What the paper behind ``term`` found, with the numbers from sdcore.paper's tables."""

    r18 = {row: SEED003_TABLE1["resnet18"][SEED003_ROWS.index(row)] for row in SEED003_ROWS}  # (top-1 err, .., ECE, ..)
    if term == "kd":
        p = PAPER["pham-cifar10-resnet18-a0.2"]
        c = {k: v[0] for k, v in p.columns}
        return (f"Pham et al. find that one round of self-distillation lifts the student above its teacher "
                f"(their {p.source.split(', ', 1)[1]}: teacher "
                f"{c['teacher']:.2f}% → student 1 {c['student 1']:.2f}%); further rounds fluctuate rather than keep "
                f"improving (students 2 and 3: {c['student 2']:.2f}%, {c['student 3']:.2f}%). The students also "
                "sit in flatter minima: smaller Hessian λ_max and trace (Sec. 5, Figs. 4–5).")
    if term == "byot":
        p = PAPER["byot-cifar100-resnet18"]
        c = {k: v[0] for k, v in p.columns}
        return (f"Zhang et al. (BYOT) find that, trained with its own shallow exits, the deepest exit beats the same "
                "network trained alone "
                f"(their {p.source.split(', ', 1)[1]}: {c['trained alone']:.2f}% → {c['exit 4 (deepest)']:.2f}%); "
                "the shallow exits are less "
                f"accurate (exit 1: {c['exit 1']:.2f}%) and the ensemble of the exits is the best "
                f"({c['ensemble']:.2f}%).")
    if term == "pskd":
        return (f"PS-KD lowers ResNet-18's top-1 error on CIFAR-100 from {r18['baseline'][0]:.2f}% to "
                f"{r18['pskd'][0]:.2f}% and its ECE from {r18['baseline'][3]:.2f}% to {r18['pskd'][3]:.2f}% (seed "
                "paper 003, Table 1): more accurate and better calibrated.")
    if term == "dmfl":
        return (f"Alone, DMFL does not lower ResNet-18's top-1 error on CIFAR-100 ({r18['dmfl'][0]:.2f}% vs "
                f"{r18['baseline'][0]:.2f}% trained plainly); with PS-KD it reaches {r18['pskd-dmfl'][0]:.2f}%, and "
                f"with PS-KD and BYOT {r18['pskd-byot-dmfl'][0]:.2f}% (seed paper 003, Table 1).")
    if term == "dml":
        return ("Peers trained together, each also matching the others' softened predictions, end more accurate "
                "than the same network trained alone, and their ensemble beats each peer (Zhang et al. 2018).")
    return (f"The labels alone: the baseline the papers compare with (seed paper 003, Table 1: ResNet-18 on "
            f"CIFAR-100, top-1 error {r18['baseline'][0]:.2f}%, ECE {r18['baseline'][3]:.2f}%).")


def _shows(ctx: _Ctx, records: list[Record]) -> list[str]:
    """Sentences on what this run's finished rounds (and cached curvature and calibration) show."""

    rounds = ctx.summary.rounds if ctx.summary is not None else ()
    if not rounds:
        return ["No round has finished yet: nothing to compare."]
    out = []
    first = rounds[0]
    if terms.is_multi_round(ctx.cfg) and len(rounds) > 1:
        students = rounds[1:]
        above = [r for r in students if r.test_acc > first.test_acc]
        best = max(students, key=lambda r: r.test_acc)
        out.append(f"{len(above)} of {len(students)} finished student(s) beat the teacher's {first.test_acc:.2f}% "
                   f"(best: {ctx.name(best.round)}, {best.test_acc:.2f}%, {best.test_acc - first.test_acc:+.2f} "
                   "points).")
        results = {(r.kind, r.round): r.result for r in records if not r.problem and r.kind in ("eigen", "trace")}
        found = verdicts(rounds, results)
        out += [v.sentence(ctx.name(v.round)) for v in found]
        if not found:
            out.append("λ_max and trace of the rounds are not computed (Live's “Compute λ_max and trace” or the "
                       "Hessian page): the flatness half of the comparison is open.")
    elif terms.is_multi_round(ctx.cfg):
        out.append(f"Only the teacher has finished ({first.test_acc:.2f}%): no student to compare yet.")
    elif first.exit_accs:
        accs = first.exit_accs
        out.append(f"The exits score {' → '.join(f'{a:.2f}' for a in accs)}% from the shallowest to the deepest"
                   + (f"; their ensemble {first.ensemble_acc:.2f}% "
                      f"({first.ensemble_acc - accs[-1]:+.2f} points against the deepest exit)."
                      if first.ensemble_acc is not None else "."))
        out.append("Against the same network trained alone: train it (the BYOT page finds such a run).")
    elif first.peer_accs:
        out.append(f"The peers score {', '.join(f'{a:.2f}' for a in first.peer_accs)}%"
                   + (f"; their ensemble {first.ensemble_acc:.2f}%." if first.ensemble_acc is not None else "."))
    else:
        out.append(f"The network scores {first.test_acc:.2f}% on the test split.")
    cal = _calibration_of(records)
    if cal:
        n_exits = len([m for m in cal if m.exit is not None and not m.ensemble])
        out.append("Calibration (PS-KD's conventions): ECE " + ", ".join(
            f"{_model_style(m, n_exits, ctx)[0]} {100 * m.report.ece:.2f}%" for m in cal) + ".")
    return out


def _calibration_of(records: list[Record]) -> list | None:
    """The run's calibration in PS-KD's convention (what the papers report), if cached."""
    return next((r.result for r in records if r.kind == "calibration" and not r.problem
                 and r.settings.get("convention") == "pskd"), None)


def _paper_numbers(cfg: RunConfig):
    """(the paper table the run's preset mirrors, the config fields where the run differs) or None."""

    if cfg.name in PAPER:
        return PAPER[cfg.name], differences(cfg, preset(cfg.name))
    same = next((n for n in PAPER if not differences(cfg, preset(n))), None)
    return (PAPER[same], []) if same is not None else None


def _paper(ctx: _Ctx, records: list[Record], metrics: list[dict[str, Any]]) -> str:

    used = terms.terms_of(ctx.cfg) or ("ce",)
    parts = ["<h3>What the paper found</h3>"]
    parts += [f"<p><strong>{html.escape(terms.TERMS[t].short)}</strong>: {text(_finding(t))}</p>" for t in used]
    parts.append("<h3>What this run shows</h3>")
    parts += [f"<p>{text(s)}</p>" for s in _shows(ctx, records)]
    matched = _paper_numbers(ctx.cfg)
    if matched is None:
        parts.append(_box("note", "This run's config mirrors none of the papers' tables (the presets named "
                                  "<code>pham-…</code>, <code>byot-…</code>, <code>pskd…</code> do): the papers' "
                                  "numbers are on other data and networks, so compare directions, not values."))
        return "".join(parts)
    numbers, diff = matched
    values = run_columns(numbers, ctx.cfg, ctx.summary, _calibration_of(records), metrics)
    columns = [c for c, _ in numbers.columns]
    rows = [["paper"] + [f"{v[0]:.2f} ± {v[1]:.2f}" if v[1] is not None else f"{v[0]:.2f}" for _, v in
                         numbers.columns],
            ["this run"] + [_num(values[c]) for c in columns]]
    parts.append(f"<h3>Beside the paper's table</h3><p>{html.escape(numbers.source)}</p>")
    parts.append(_table(["source"] + columns, rows))
    parts.append(f'<p class="caption">{esc(numbers.note)}</p>')
    if diff:
        parts.append(_box("note", "This run differs from the preset in " + html.escape(", ".join(diff)) + "."))
    return "".join(parts)


# ---------------------------------------------------------------- the two reports

def _header(title: str, subtitle: str, rows: list[tuple[str, str]]) -> str:
    return (f'<header id="top"><h1>{html.escape(title)}</h1><p class="sub">{esc(subtitle)}</p>'
            + _table(None, rows, cls="kv")
            + "</header>")


def _run_header(run: Run, cfg: RunConfig) -> str:
    rows = [("run", run.id), ("name", cfg.name)]
    try:
        st = run.status_record()
        rows.append(("status", st["status"] + (f": {st['error']}" if st.get("error") else "")))
        rows += [(k, str(st[k]).replace("T", " ")) for k in ("created", "started", "finished") if st.get(k)]
        rows += [(k, str(st[k])) for k in ("device", "host", "threads", "sdcore") if st.get(k)]
        rows.append(("trained with", provenance.describe(st, deterministic=cfg.deterministic)))
    except RunError as e:
        rows.append(("status", f"unreadable: {e}"))
    return _header(f"{cfg.name} — sdlab run report", config_summary(cfg), rows)


def run_report(run: Run, *, pdf: bool = False) -> str | bytes:
    """The run's report as one HTML document (``pdf``: printed to PDF by Chromium, as bytes). Reads the run folder
    only. Raises RunError when its config.json cannot be read (nothing else can be said then); any other damage
    is named in the section it touches."""
    try:
        cfg = run.config()
    except RunError as e:
        raise RunError(f"cannot report run {run.id}: {e}") from None
    page = _Page()
    problems: list[str] = []

    def read(what: Callable[[], Any], default: Any) -> Any:
        try:
            return what()
        except (RunError, OSError) as e:
            problems.append(str(e))
            return default

    summary = read(run.summary, None)
    metrics = read(run.metrics, [])
    records = read(lambda: read_records(run), [])
    ctx = _Ctx(run=run, cfg=cfg, summary=summary, page=page)
    header = _run_header(run, cfg) + "".join(_box("problem", f"Part of this run cannot be read: {esc(p)}")
                                             for p in problems)
    builders = {"config": lambda: _config_table(cfg), "loss": lambda: _loss(cfg),
                "curves": lambda: _curves(ctx, metrics), "rounds": lambda: _rounds(ctx),
                "analyses": lambda: _analyses(ctx, records), "paper": lambda: _paper(ctx, records, metrics)}
    body = [_section(sid, RUN_SECTIONS[sid], build) for sid, build in builders.items()]
    doc = _document(f"{cfg.name} ({run.id}) — sdlab report", header, RUN_SECTIONS, body, "the run folder")
    return html_to_pdf(doc) if pdf else doc


def sweep_report(store: RunStore, sweep: sw.Sweep, *, pdf: bool = False) -> str | bytes:
    """A sweep's report: its grid and base config, its loss, every trial's state and scores, and the Compare
    page's table and figure over the trials' runs (seeds pooled into mean ± std)."""

    spec = sweep.spec()
    states = sw.trial_states(store, sweep)
    page = _Page()
    created = ""
    try:
        created = str(files.read_json_object(sweep.path / "sweep.json").get("created", "")).replace("T", " ")
    except FileProblem:
        pass
    grid = "  ×  ".join(f"{k} = {', '.join(v)}" for k, v in spec.grid)
    header = _header(f"{spec.base.name} — sdlab sweep report", f"{grid} — {sw.describe(states)}",
                     [("sweep", sweep.id), ("created", created), ("trials", str(len(states))),
                      ("running", "yes" if sweep.is_live() else "no")])

    def grid_section() -> str:
        return (_table(("field", "values"), [(k, ", ".join(v)) for k, v in spec.grid])
                + "<h3>Base config (every trial is it with its grid values)</h3>" + _config_table(spec.base))

    def trials() -> str:
        rows = [(str(r["trial"]), r["overrides"], r["status"], _num(100 * r["progress"], ".0f"),
                 r["test acc % by round"] or "–", r["run"] or "–") for r in sw.trial_rows(states)]
        return _table(("trial", "overrides", "status", "progress (%)", "test accuracy by round (%)", "run"), rows)

    def comparison() -> str:
        rows = compare_table(store.get(s.run_id) for s in states if s.run_id)
        if not rows:
            return "<p>No trial has a finished round yet.</p>"
        width = max(len(r.rounds) for r in rows)
        method = rows[0].method
        table = _table(["config", "seeds"] + [plots.round_name(k, method) for k in range(width)],
                       [[r.label, str(len(r.seeds))] + [
                           (f"{s.mean:.2f} ± {s.std:.2f}" if s.n > 1 else f"{s.mean:.2f}", "num", s.mean)
                           for s in r.rounds] + ["–"] * (width - len(r.rounds)) for r in rows])
        return table + page.figure(plots.accuracy_by_round(rows), "Test accuracy per round, mean ± std over the "
                                                                  "trials that differ only by seed.")

    builders = {"grid": grid_section, "loss": lambda: "<p>Of the base config; the grid may change some of its "
                "numbers (or its method) per trial.</p>" + _loss(spec.base),
                "trials": trials, "comparison": comparison}
    body = [_section(sid, SWEEP_SECTIONS[sid], build) for sid, build in builders.items()]
    doc = _document(f"sweep {sweep.id} — sdlab report", header, SWEEP_SECTIONS, body, "its trials' run folders")
    return html_to_pdf(doc) if pdf else doc


# ---------------------------------------------------------------- PDF and the CLI's entry point

CHROMIUM_ENV = "SDLAB_CHROMIUM"
PDF_TIMEOUT_S = 120


def chromium() -> str | None:
    """A Chromium (or Chrome) to print with: $SDLAB_CHROMIUM, else the first on PATH."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if os.access(given, os.X_OK) else None
    return next((p for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (p := shutil.which(name))), None)


def html_to_pdf(doc: str) -> bytes:
    """``doc`` printed to PDF by headless Chromium (the charts drawn by plotly.js first); RunError if there is
    no Chromium or it fails."""
    exe = chromium()
    if exe is None:
        raise RunError(f"a PDF needs Chromium (apt-get install chromium, or set ${CHROMIUM_ENV}); the HTML report "
                       "needs nothing: drop --pdf and print it from a browser")
    with tempfile.TemporaryDirectory(prefix="sdlab-report-") as tmp:
        src, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        src.write_text(doc, encoding="utf-8")
        # A window as wide as an A4 page's printable area: the responsive charts are drawn at the width they print.
        cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
               "--disable-background-networking", "--disable-component-update", "--no-pdf-header-footer",
               f"--user-data-dir={Path(tmp) / 'profile'}", "--window-size=1000,1400", "--virtual-time-budget=10000",
               f"--print-to-pdf={out}", src.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=PDF_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RunError(f"Chromium did not print the report within {PDF_TIMEOUT_S} s") from None
        except OSError as e:
            raise RunError(f"cannot run Chromium ({exe}): {e.strerror or e}") from None
        if not out.is_file() or out.stat().st_size == 0:
            why = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise RunError(f"Chromium could not print the report: {why[:300]}")
        return out.read_bytes()


def write_report(store: RunStore, ident: str, *, out: str | Path | None = None, pdf: bool = False) -> Path:
    """The report of run or sweep ``ident`` written to ``out`` (default: report.html, or report.pdf, in the run's
    or the sweep's folder); the path written. RunError when ``ident`` names neither."""
    found = sw.run_or_sweep(store, ident)
    doc = sweep_report(store, found, pdf=pdf) if isinstance(found, sw.Sweep) else run_report(found, pdf=pdf)
    folder = found.path
    path = Path(out) if out is not None else folder / ("report.pdf" if pdf else "report.html")
    atomic_write_bytes(path, doc if isinstance(doc, bytes) else doc.encode("utf-8"))
    return path
