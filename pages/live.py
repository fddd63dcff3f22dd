"""Live: follow a run while it trains (and look back at finished ones); cancel it."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import ui
from sdcore import terms
from sdcore.plots import training_curves
from sdcore.runs import RunError

st.title("Live training")
infos = ui.run_infos()
jobs = {h.run_id: h for h in ui.manager().jobs() if h.kind == "train"}  # newest handle of a run wins
if not infos:
    st.info("No run yet. Launch one from **Train** (the demo takes one click).")
    if st.button("Go to Train", icon=":material/model_training:"):
        ui.go_to("train")
    st.stop()

ids = [i.id for i in infos]
active_ids = [h.run_id for h in ui.manager().active() if h.kind == "train"]
if st.session_state.get("live_run") not in ids:
    st.session_state["live_run"] = active_ids[-1] if active_ids else ids[0]
by_id = {i.id: i for i in infos}
st.selectbox("Run", ids, key="live_run", help="Newest first. The status below updates live.")
run_id = st.session_state["live_run"]
following = run_id in active_ids or by_id[run_id].status in ("queued", "running")


@st.fragment(run_every=1.0 if following else None)
def live_view() -> None:
    try:
        run = ui.store().get(run_id)
        cfg = run.config()
    except (RunError, OSError) as e:
        st.error(f"This run cannot be read: {e}")
        return
    handle = jobs.get(run_id)
    if handle is not None and not handle.done:
        p = handle.progress()
        c1, c2 = st.columns([5, 1])
        if p.status == "queued":
            c1.progress(0.0, text="queued: waits for the job before it on this device")
        else:
            eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            where = terms.label(cfg.method)  # one network (or DML's peers together): its terms
            if terms.is_multi_round(cfg):
                who = "teacher" if p.round == 0 else f"student {p.round}"
                where = f"round {p.round} of {p.rounds - 1} ({who})"
            c1.progress(p.fraction, text=f"{where} · epoch {p.epoch}/{p.epochs} · step {p.step}/{p.steps}{eta}")
        if c2.button("Cancel", key=f"cancel-{run_id}", icon=":material/stop_circle:", width="stretch"):
            handle.cancel()
            st.toast("Cancelling — finished rounds are kept and the run can be resumed from Runs.")
    else:
        status = run.info()
        msg = {"done": st.success, "failed": st.error, "cancelled": st.warning, "interrupted": st.warning}
        text = f"Status: **{status.status}**" + (f" — {status.error}" if status.error else "")
        msg.get(status.status, st.info)(text)
        if following:  # it just finished: one full rerun stops the once-a-second refresh
            st.rerun()
    try:
        metrics = ui.metrics(run)
    except RunError as e:  # damaged metrics.jsonl: say so, keep the page alive
        st.error(f"This run's metrics cannot be read: {e}")
        return
    if not metrics:
        st.caption("The first epoch's numbers appear here as soon as it ends." if following
                   else "No epoch finished before the run stopped.")
        return
    fig = training_curves(metrics, method=cfg.method)
    st.plotly_chart(fig, width="stretch", key=f"curves-{run_id}")
    table = ui.rounds_table(run.summary(), cfg.method) if not cfg.model.exits else None  # exits: see BYOT exits
    if table is not None:
        st.dataframe(table, hide_index=True)
        ui.download_csv(table.data.to_csv(index=False), f"{run_id}-rounds", key=f"dl-rounds-{run_id}")
    c1, c2 = st.columns(2)
    with c1:
        ui.download_figure(fig, f"{run_id}-curves", key=f"dl-fig-{run_id}")
    with c2:
        ui.download_csv(lambda: pd.DataFrame(metrics).to_csv(index=False), f"{run_id}-metrics",
                        key=f"dl-csv-{run_id}", label="Download metrics (CSV)")


live_view()


def this_run() -> str:
    """One sentence on how the selected run compares with the paper's finding."""
    try:
        rounds = (ui.store().get(run_id).summary() or {}).get("rounds", [])
    except (RunError, OSError):
        return ""
    if len(rounds) < 2:
        return ""
    teacher, students = rounds[0]["test_acc"], [r["test_acc"] for r in rounds[1:]]
    above = sum(s > teacher for s in students)
    return (f"\n\n**This run:** {above} of {len(students)} finished student(s) beat the teacher's "
            f"{teacher:.2f}% (best student: {max(students):.2f}%).")


ui.explain(
    "**Left:** the training loss of every round per epoch. **Right:** test accuracy (solid) and validation "
    "accuracy (dotted) per epoch. The teacher (round 0) is red-orange; students are blue/green and keep the "
    "same colour on every page. For a network with exits (BYOT, DMFL), each line on the right is one exit, "
    "from the shallowest (light) to the deepest (dark), plus their ensemble, and the left shows the training "
    "objective with each term's weighted share of it dotted (the shares add up to it). A network trained once on its terms (PS-KD, or the labels "
    "alone) is a single round.\n\n"
    "Pham et al. found that a student trained on its teacher's softened outputs ends *above* the teacher "
    "(their Table 2), and that further rounds fluctuate rather than keep improving. With noisy training "
    "labels, watch the teacher's test accuracy peak early and sag as it memorises wrong labels, while the "
    "students' curves stay higher: they learn from the teacher's soft outputs, not only from the flipped "
    "labels. Each round keeps its best-validation epoch (never chosen on the test split); the table gives "
    "the kept model's test accuracy and its change against the teacher." + this_run())
