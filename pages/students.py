"""Teacher vs students: logit distance per round (Pham Fig. 6), agreement, per-class deltas, and the images they
disagree on."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from app import ui
from app.ui.analyses import run_result
from sdcore.analysis.teacher_student import GallerySettings
from sdcore.plots import class_deltas, logit_distances, round_name

GALLERY = 24  # images per side

st.title("Teacher vs students: what changes between rounds?")
run, _ = ui.run_picker("students_run", lambda i: i.rounds_done > 1 and ui.multi_round(i),
                       empty="No self-distillation run with a finished student yet. Launch the demo from "
                             "**Train**: the comparison appears once student 1 has finished.")
# One background job: the gallery's images need the comparison, which it computes (and caches) first.
gallery = run_result(run, "gallery", GallerySettings(per_side=GALLERY), key="students")
result = run_result(run, "teacher_student", key="students-pairs")
pairs = result.pairs

table = pd.DataFrame([{"model": round_name(p.round), "its teacher": round_name(p.round - 1),
                       "logit MSE to its teacher": p.logit_mse, "KL(teacher ‖ student)": p.kl,
                       "agreement with its teacher (%)": p.agreement_prev,
                       "agreement with round 0 (%)": p.agreement_teacher, "test accuracy (%)": p.test_acc,
                       "fixed (right now, teacher wrong)": len(p.fixed),
                       "broken (wrong now, teacher right)": len(p.broken)}
                      for p in pairs])
st.dataframe(table.style.format(precision=3), hide_index=True, width="stretch")
c1, c2 = st.columns(2)
with c1:
    ui.download_csv(table.to_csv(index=False), f"{run.id}-teacher-student", key="dl-ts-csv")
with c2:
    st.download_button("Download all numbers (JSON)", json.dumps(result.to_dict()),
                       file_name=f"{run.id}-teacher-student.json", mime="application/json", on_click="ignore",
                       icon=":material/download:")

st.subheader("How far each student moved from its teacher")
dist = logit_distances([p.round for p in pairs], [p.logit_mse for p in pairs], [p.kl for p in pairs])
ui.chart(dist, key="ts-dist", name=f"{run.id}-logit-distance")
ui.download_figure(dist, f"{run.id}-logit-distance", key="dl-ts-dist", caption=ui.run_caption(run.id))

st.subheader("Per-class accuracy vs the teacher")
deltas = class_deltas(result.class_names, {p.round: p.class_delta for p in pairs})
ui.chart(deltas, key="ts-classes", name=f"{run.id}-class-deltas")
ui.download_figure(deltas, f"{run.id}-class-deltas", key="dl-ts-classes", caption=ui.run_caption(run.id))

st.subheader("Test images they disagree on")
st.caption("Under each image: its label · the teacher's prediction (T) · the student's (S).")
k = st.segmented_control("Student", [p.round for p in pairs], default=pairs[0].round, required=True,
                         format_func=round_name, key="students_gallery_round")
pair = next(p for p in pairs if p.round == k)
names = result.class_names


def show(indices: list[int], title: str, column) -> None:
    with column:
        st.markdown(f"**{title}** — {len(indices)} image(s)"
                    + (f", first {GALLERY} shown" if len(indices) > GALLERY else ""))
        if not indices:
            st.caption("None.")
            return
        shown = indices[:GALLERY]
        imgs = gallery.pick(shown)
        cols = st.columns(6)
        for j, (i, img) in enumerate(zip(shown, imgs)):
            a = img.numpy().transpose(1, 2, 0)
            a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8)  # the normalized input, rescaled to [0, 1]
            scale = max(1, 64 // a.shape[0])
            a = np.repeat(np.repeat(a, scale, 0), scale, 1)  # nearest-neighbour upscaling: crisp 8×8 digits
            caption = (f"{names[result.targets[i]]} · T {names[result.predictions[0][i]]} · "
                       f"S {names[result.predictions[k][i]]}")
            cols[j % 6].image(a if a.shape[2] == 3 else a[:, :, 0], caption=caption, clamp=True, width="stretch")


g1, g2 = st.columns(2, gap="large")
show(pair.fixed, f"{round_name(k)} right, teacher wrong", g1)
show(pair.broken, f"teacher right, {round_name(k)} wrong", g2)

first = pairs[0]
shrinking = len(pairs) > 1 and all(b.logit_mse < a.logit_mse for a, b in zip(pairs, pairs[1:]))
verdict = (f"\n\n**This run:** student 1 fixes {len(first.fixed)} of the teacher's test mistakes and makes "
           f"{len(first.broken)} new ones; it agrees with the teacher on {first.agreement_teacher:.1f}% of the test "
           "images." + (" The logit distance shrinks with every round, as in Pham et al. Fig. 6."
                        if shrinking else ""))
ui.explain(
    "Each student is trained from scratch to match its teacher's softened outputs (and the labels, with weight "
    "α). **Logit MSE** is the mean squared difference between a student's logits and its own teacher's (the "
    "previous round) on the test images; **KL** the divergence between their predicted distributions. Pham et "
    "al. (Sec. 4, Fig. 6) find that this distance shrinks round after round — successive students grow alike — "
    "which is why averaging the rounds (BAN's ensemble) gains less than averaging independently trained models. "
    "**Agreement** is the share of test images with the same predicted class. The **per-class** bars show where a "
    "student gained or lost accuracy against the teacher (round 0), and the gallery shows the actual images "
    "it fixed and broke: a student that beats its teacher mostly fixes ambiguous images rather than learning "
    "different classes." + verdict)
