"""Hessian: how sharp is each round's minimum? λ_max, trace, eigen-spectral density, ECDF of the top-k."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import ui
from sdcore.analysis.hessian import EIGEN_MAX_ITER
from sdcore.analysis.runner import AnalysisSpec, estimate_seconds
from sdcore.plots import curvature_bars, eigen_ecdf, round_name, spectral_densities

st.title("Hessian: how sharp is each minimum?")
run, method, done = ui.analysis_run("hessian_run")
c1, c2, c3 = st.columns([2, 1, 1])
rounds = c1.multiselect("Rounds", done, default=done, format_func=lambda k: round_name(k, method))
top_k = c2.number_input("Top eigenvalues (ECDF)", 1, 100, 20,
                        help=f"Lanczos: at most {EIGEN_MAX_ITER} + 4·k Hessian-vector products per round (k = 100: "
                             f"{EIGEN_MAX_ITER + 400}), fewer once converged; before computing, the page says what "
                             "it costs on this machine.")
subset = c3.number_input("Training examples used", 64, 4096, 512, step=64)
baselines = ui.baseline_picker(run, "hessian_baselines")
if not rounds:
    st.warning("Pick at least one round.")
    st.stop()
spec = AnalysisSpec(rounds=tuple(sorted(rounds)), top_k=int(top_k), subset=int(subset))
per_round = estimate_seconds(run, spec).text()  # from timings earlier analyses stored: reads JSON only
results = ui.analysis_results(run, spec, per_round=per_round)
accuracy = {k: run.summary().rounds[k].test_acc for k in spec.rounds}
ks = ui.baseline_results(results, baselines, spec, per_round=per_round)
accuracy.update({name: other.summary().rounds[0].test_acc for name, other in baselines})
lam = [results[("eigen", k)].values[0] for k in ks]
trace = [results[("trace", k)].trace for k in ks]
stderr = [results[("trace", k)].stderr for k in ks]
bars = curvature_bars(ks, lam, trace, stderr, method=method)
ui.chart(bars, key="hessian-bars", name=f"{run.id}-curvature")
table = pd.DataFrame({"model": [round_name(k, method) for k in ks], "λ_max": lam, "trace": trace,
                      "trace std. error": stderr, "test accuracy (%)": [accuracy[k] for k in ks]})
st.dataframe(table.style.format(precision=3), hide_index=True, width="stretch")
c1, c2, c3 = st.columns(3)
with c1:
    ui.download_figure(bars, f"{run.id}-curvature", key="dl-curv", caption=ui.run_caption(run.id))
with c2:
    ui.download_csv(table.to_csv(index=False), f"{run.id}-curvature", key="dl-curv-csv")
with c3:
    st.download_button("Download all numbers (JSON)",
                       json.dumps({f"{k}-{r}": v.to_dict() for (k, r), v in results.items()}),
                       file_name=f"{run.id}-hessian.json", mime="application/json", on_click="ignore",
                       icon=":material/download:")

left, right = st.columns(2)
with left:
    st.subheader("Eigen-spectral density")
    esd = spectral_densities({k: (results[("density", k)].grid, results[("density", k)].density) for k in ks},
                             method=method)
    ui.chart(esd, key="hessian-esd", name=f"{run.id}-esd")
    ui.download_figure(esd, f"{run.id}-esd", key="dl-esd", caption=ui.run_caption(run.id))
with right:
    st.subheader(f"ECDF of the top {spec.top_k} eigenvalues")
    ecdf = eigen_ecdf({k: results[("eigen", k)].values for k in ks}, method=method)
    ui.chart(ecdf, key="hessian-ecdf", name=f"{run.id}-ecdf")
    ui.download_figure(ecdf, f"{run.id}-ecdf", key="dl-ecdf", caption=ui.run_caption(run.id))

flatter = [round_name(k, method) for k, v in zip(ks, lam) if ks[0] == 0 and isinstance(k, int) and k > 0
           and v < lam[0]]
ui.explain(
    "The Hessian of the training loss measures curvature around the trained weights. **λ_max** is the "
    "curvature along the sharpest direction, the **trace** the sum over all directions (the sharpest "
    "20-dimensional Krylov subspace exactly, Hutchinson's random-probe estimate for the rest, ± one "
    "standard error), the **density** how the eigenvalues spread (stochastic Lanczos "
    "quadrature; log axis), and the **ECDF** of the top eigenvalues shifts right for a sharper model. "
    "Pham et al. (Sec. 5, Figs. 4–5) find that self-distilled students sit in flatter minima than their "
    "teacher — smaller λ_max and trace — and argue that this, not 'more knowledge', explains why they "
    "generalise better; they also find them flatter than a model trained with SAM, which seeks flat "
    "minima explicitly — add a SAM run (the `demo-sam` preset) as a baseline to check. All rounds here use "
    "the same fixed subset of the training split, BatchNorm in eval mode.\n\n"
    + (f"**This run:** flatter than the teacher: {', '.join(flatter)}." if flatter else
       "**This run:** no student is flatter than the teacher by λ_max. With best-validation model selection "
       "this is common on noisy labels: the kept teacher is an early epoch that never fitted the flipped "
       "labels. Pham et al. keep the last epoch, and so does the `demo` preset: there every student is more "
       "accurate *and* flatter than its teacher on 3 of 3 seeds (BENCHMARKS.md)."),
    presets=() if flatter else ("demo",))
