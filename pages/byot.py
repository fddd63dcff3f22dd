"""BYOT exits: per-exit accuracy, their ensemble, the backbone trained alone, and accuracy vs latency."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import ui
from app.ui.analyses import run_results
from sdcore import terms
from sdcore.config import is_external, preset
from sdcore.plots import (
    ENSEMBLE_COLOR,
    TEACHER_COLOR,
    exit_bars,
    exit_name,
    exit_pca,
    latency_scatter,
    layer_gradients,
    training_curves,
)

st.title("BYOT: one network, several exits")
infos = [i for i in ui.run_infos() if ui.has_exits(i)]
if not infos:
    st.info("No run with exits yet. BYOT (Be Your Own Teacher) adds shallow classifiers to one network; the deepest "
            "teaches the others while they all train together (DMFL, from seed paper 003, uses the exits too).")
    if st.button("Launch the BYOT demo", type="primary", icon=":material/play_arrow:"):
        ui.launch(preset("demo-byot"))
    st.stop()

by_id = {i.id: i for i in infos}
run_id = st.selectbox("Run with exits", list(by_id), format_func=lambda i: ui.run_label(by_id[i]))
run = ui.store().get(run_id)
cfg = run.config()
metrics = ui.metrics(run)
st.caption(f"Terms: **{terms.label(cfg.method)}** — " + "; ".join(terms.TERMS[t].label for t in terms.terms_of(cfg)))

st.subheader("Every exit while it trains")
if metrics:
    curves = training_curves(metrics, method=cfg.method)
    ui.chart(curves, key="byot-curves", name=f"{run_id}-exits-curves")
    ui.download_figure(curves, f"{run_id}-exits-curves", key="dl-byot-curves", caption=ui.run_caption(run_id))
else:
    st.caption("Curves appear after the first epoch.")

summary = run.summary()
if summary is None or not summary.rounds:
    st.info("The run has not finished yet: final per-exit accuracy and latency appear when it does.")
    st.stop()
final = summary.rounds[0]


def alone_baseline() -> tuple[float, str] | None:
    """Round 0 of a run trained on the labels alone (a multi-round run's teacher, or a labels-only run) with
    the same data, backbone, epochs and optimizer (SAM included) and a single network: the same network trained
    without exits.
    The newest such run wins."""
    for info in ui.run_infos():
        other = ui.run_config(info.id) if info.rounds_done > 0 and info.status != "unreadable" else None
        if other is None or other.model.exits or other.model.teachers != 1:
            continue  # an ensemble of teachers is not "the same network"
        if terms.terms_of(other) and not terms.is_multi_round(other):
            continue  # round 0 trains on the labels alone only in multi-round KD and the labels-only baseline
        m, o = other.model, cfg.model
        if (other.data, other.epochs, other.optim, m.arch, m.width, m.skip) == \
                (cfg.data, cfg.epochs, cfg.optim, o.arch, o.width, o.skip):
            return info.test_acc[0], info.id
    return None


base = alone_baseline()
st.subheader("Final accuracy of each exit")
bars = exit_bars(final.exit_accs, final.ensemble_acc,
                 baseline=base[0] if base else None,
                 baseline_label="same backbone trained alone")
ui.chart(bars, key="byot-bars", name=f"{run_id}-exits")
ui.download_figure(bars, f"{run_id}-exits", key="dl-byot-bars", caption=ui.run_caption(run_id))
if base is not None:
    st.caption(f"Dashed line: round 0 of run {ui.code(base[1])}, trained on the labels alone — same data, backbone, "
               "epochs and optimizer, no exits.")
else:
    st.caption("No run of the same backbone without exits on the same data yet — train the `demo` preset "
               "(its teacher is that baseline for `demo-byot`) or `demo-baseline` to see it as a dashed line.")
    ui.preset_buttons("demo", "demo-baseline")

st.subheader("Accuracy against latency")
n = len(final.exit_accs)
lat = run_results([run], "exit_latency", key="byot-latency").get(run_id)
if lat is not None:
    scatter = latency_scatter(lat["ms"], final.exit_accs, batch_size=lat["batch_size"], device=lat["device"])
    ui.chart(scatter, key="byot-latency", name=f"{run_id}-latency")
    ui.download_figure(scatter, f"{run_id}-latency", key="dl-byot-latency", caption=ui.run_caption(run_id))
    table = pd.DataFrame({"classifier": [exit_name(i, n) for i in range(n)],
                          "test accuracy (%)": final.exit_accs,
                          f"latency (ms / batch of {lat['batch_size']})": lat["ms"]})
    st.dataframe(table.style.format(precision=2), hide_index=True)
    if is_external(cfg.model.arch):
        st.caption("Your own model's shallow exits are measured running the whole model: its exits are hooks on "
                   "it, which cannot stop it early, so they are no faster than the deepest here.")
    ui.download_csv(table.to_csv(index=False), f"{run_id}-exits", key="dl-byot-table")

st.subheader("Gradients reaching each layer")


def layer_means(records: list[dict]) -> tuple[list[str], list[float]] | None:
    """Per backbone convolution, its mean |gradient| averaged over round 0's epochs (None: not logged)."""
    logged = [r["grad_abs"] for r in records if r.get("round") == 0 and r.get("grad_abs")]
    if not logged:
        return None
    layers = list(logged[0])
    return layers, [sum(g[n] for g in logged) / len(logged) for n in layers]


grads = {"with exits (BYOT)": layer_means(metrics)}
if base is not None:
    grads["trained alone"] = layer_means(ui.metrics(ui.store().get(base[1])))
grads = {k: v for k, v in grads.items() if v is not None}
if grads:
    colors = {"with exits (BYOT)": ENSEMBLE_COLOR, "trained alone": TEACHER_COLOR}
    gfig = layer_gradients({k: (v[0], v[1], colors[k]) for k, v in grads.items()})
    ui.chart(gfig, key="byot-grads", name=f"{run_id}-layer-gradients")
    ui.download_figure(gfig, f"{run_id}-layer-gradients", key="dl-byot-grads", caption=ui.run_caption(run_id))
    st.caption("Mean |gradient| of each backbone convolution's weights per step, averaged over the epochs "
               "(exit heads left out). BYOT Fig. 5: with exits, more gradient reaches the early layers.")
else:
    st.caption("This run was trained before sdlab logged per-layer gradients; train it again to see them.")

st.subheader("What each exit sees: features on their first two principal components")
feats = run_results([run], "exit_features", key="byot-features").get(run_id) or []
if feats:
    pca = exit_pca(feats, feats[0].class_names)
    ui.chart(pca, key="byot-pca", name=f"{run_id}-exit-pca")
    ui.download_figure(pca, f"{run_id}-exit-pca", key="dl-byot-pca", caption=ui.run_caption(run_id))
    sep = pd.DataFrame({"classifier": [exit_name(f.exit, len(feats)) for f in feats],
                        "SSE (within classes)": [f.separation.sse for f in feats],
                        "SSB (between classes)": [f.separation.ssb for f in feats],
                        "SSE/SSB": [f.separation.ratio for f in feats],
                        "variance on the 2 components (%)": [100 * f.explained for f in feats]})
    st.dataframe(sep.style.format(precision=3), hide_index=True)
    ui.download_csv(sep.to_csv(index=False), f"{run_id}-exit-separation", key="dl-byot-sep")

deep, best_exit = final.exit_accs[-1], max(range(n), key=lambda i: final.exit_accs[i])
ui.explain(
    "BYOT (Zhang et al., *Be Your Own Teacher*) cuts a network into sections and puts a small classifier "
    "(bottleneck + pooling + linear) after each one. All exits train together: each shallow exit learns from "
    "the labels (weight α), from the deepest exit's softened outputs (1 − α, ×τ²) and from its features "
    "(β‖F_i − F_deepest‖²); the deepest exit learns from the labels alone. The paper reports that the deepest "
    "exit beats the same network trained alone (their Table 1: +2.65 points on CIFAR-100 on average), that the "
    "ensemble of exits does better still, and that shallow exits trade a little accuracy for much lower "
    "latency (their Table 5).\n\n"
    f"**This run:** the deepest exit reaches {deep:.2f}%, the ensemble "
    f"{final.ensemble_acc if final.ensemble_acc is not None else float('nan'):.2f}%, and the best single exit is "
    f"{exit_name(best_exit, n)}."
    + (f" SSE/SSB (BYOT Table 6: smaller = denser, better separated class clusters) goes from "
       f"{feats[0].separation.ratio:.3g} at the shallowest exit to {feats[-1].separation.ratio:.3g} at the deepest."
       if feats else "")
    + (f" The same backbone trained alone reached {base[0]:.2f}% ({'below' if base[0] < deep else 'above'} "
       "the deepest exit)." if base else ""))
