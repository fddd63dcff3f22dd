"""Loss surface: filter-normalized 1D/2D/3D landscapes, teacher→student interpolation, weight-noise flatness."""
from __future__ import annotations

import json

import streamlit as st

from app import ui
from sdcore.analysis.runner import AnalysisSpec, estimate_seconds
from sdcore.plots import loss_contours, loss_lines, loss_surface_3d, noise_curves, round_name, zrange

st.title("Loss surface: how wide is each minimum?")
run, method, done = ui.analysis_run("landscape_run")
c1, c2, c3 = st.columns([2, 1, 1])
rounds = c1.multiselect("Rounds", done, default=done, format_func=lambda k: round_name(k, method))
kind = c2.segmented_control("Surface", ("1d", "2d"), default="2d", required=True)
steps = c3.number_input("Grid points per axis", 5, 101, 21, step=2,
                        help="A 2D surface evaluates the loss at n × n points (21: 441), a 1D line at 2n + 1; 51 "
                             "suits a GPU. Before computing, the page says what it costs on this machine.")
baselines = ui.baseline_picker(run, "landscape_baselines")
if not rounds:
    st.warning("Pick at least one round.")
    st.stop()
spec = AnalysisSpec(rounds=tuple(sorted(rounds)), hessian=False, landscape=kind, steps=int(steps),
                    interpolate=0 in rounds, flatness=True)
per_round = estimate_seconds(run, spec).text()  # from timings earlier analyses stored: reads JSON only
results = ui.analysis_results(run, spec, per_round=per_round)
ks = ui.baseline_results(results, baselines, spec, per_round=per_round)
if kind == "1d":
    st.subheader("Loss along a random filter-normalized direction")
    fig = loss_lines({k: (results[("line", k)].alphas, results[("line", k)].loss) for k in ks}, method=method)
    ui.chart(fig, key="land-1d", name=f"{run.id}-loss-1d")
    ui.download_figure(fig, f"{run.id}-loss-1d", key="dl-1d", caption=ui.run_caption(run.id))
else:
    surfaces = {k: (results[("surface", k)].alphas, results[("surface", k)].betas, results[("surface", k)].loss)
                for k in ks}
    st.subheader("2D contours (one colour scale for all rounds)")
    fig = loss_contours(surfaces, method=method)
    ui.chart(fig, key="land-2d", name=f"{run.id}-loss-2d")
    ui.download_figure(fig, f"{run.id}-loss-2d", key="dl-2d", caption=ui.run_caption(run.id))
    st.subheader("3D surfaces (height: training loss, same scale for all rounds; drag to rotate)")
    zr = zrange(surfaces)
    cols = st.columns(len(ks))
    for col, k in zip(cols, ks):
        with col:
            f3 = loss_surface_3d(*surfaces[k], zrange=zr, name=round_name(k, method))
            ui.chart(f3, key=f"land-3d-{k}", name=f"{run.id}-loss-3d-round{k}")
            ui.download_figure(f3, f"{run.id}-loss-3d-round{k}", key=f"dl-3d-{k}", caption=ui.run_caption(run.id))

left, right = st.columns(2)
with left:
    students = [k for k in ks if isinstance(k, int) and k > 0 and ("interp", k) in results]
    if students:
        st.subheader("From the teacher to each student")
        interp = loss_lines({k: (results[("interp", k)].alphas, results[("interp", k)].loss) for k in students},
                            method=method, xaxis="t: weights (1 − t)·teacher + t·student (0 = teacher, 1 = student)")
        ui.chart(interp, key="land-interp", name=f"{run.id}-interpolation")
        ui.download_figure(interp, f"{run.id}-interpolation", key="dl-interp", caption=ui.run_caption(run.id))
    else:
        st.caption("Include the teacher (round 0) and a student to see the teacher→student line.")
with right:
    st.subheader("Under Gaussian weight noise")
    noise = noise_curves({k: (results[("flatness", k)].sigmas, results[("flatness", k)].loss_mean,
                              results[("flatness", k)].loss_std) for k in ks}, method=method)
    ui.chart(noise, key="land-noise", name=f"{run.id}-noise")
    ui.download_figure(noise, f"{run.id}-noise", key="dl-noise", caption=ui.run_caption(run.id))
st.download_button("Download all numbers (JSON)",
                   json.dumps({f"{k}-{r}": v.to_dict() for (k, r), v in results.items()}),
                   file_name=f"{run.id}-landscape.json", mime="application/json", on_click="ignore",
                   icon=":material/download:")
ui.explain(
    "Li et al.'s filter-normalized plots move the trained weights θ along random directions whose every "
    "filter is rescaled to the norm of the matching filter of θ, so that plots of different networks are "
    "comparable: loss(θ + δ·d₁ + η·d₂), where δ and η are the steps along the two directions d₁ and d₂ (the "
    "axes of the plots; not distillation's α). A wider basin (contours further apart, a shallower bowl) means a "
    "flatter minimum. Pham et al. (Sec. 5) show students' surfaces wider than their teacher's; BYOT (Fig. 4) "
    "shows flatness by adding Gaussian noise to the weights: a flat model's loss rises more slowly with σ. "
    "The teacher→student line shows whether the two minima are connected by a low-loss path or separated "
    "by a barrier. All rounds use the same fixed training subset and the same random directions (same seed); "
    "the centre of every plot is the round's own training loss.")
