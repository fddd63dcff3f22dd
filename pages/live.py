"""Live: follow a run while it trains (and look back at finished ones); cancel it."""
from __future__ import annotations

import streamlit as st

from app import ui
from sdcore import terms
from sdcore.analysis.story import curvature_spec, run_verdicts
from sdcore.config import ConfigError
from sdcore.plots import LOSS_QUANTITIES, curvature_bars, loss_quantities, round_name, sharpness_curves, training_curves
from sdcore.runs import RunError, records_csv

st.title("Live training")
infos = ui.run_infos()
jobs = {h.run_id: h for h in ui.manager().jobs() if h.kind == "train"}  # newest handle of a run wins
if not infos:
    st.info("No run yet. Launch one from **Train** (the demo takes one click).")
    if st.button("Go to Train", icon=":material/model_training:"):
        ui.go_to("train")
    st.stop()


def busy_analysing(rid: str) -> bool:
    return rid in analysing and not analysing[rid].done


ids = [i.id for i in infos]
active_ids = [h.run_id for h in ui.manager().active() if h.kind == "train"]
analysing = {h.run_id: h for h in ui.manager().jobs() if h.kind == "analysis"}  # newest analysis of a run wins
if st.session_state.get("live_run") not in ids:
    st.session_state["live_run"] = active_ids[-1] if active_ids else ids[0]
by_id = {i.id: i for i in infos}
st.selectbox("Run", ids, key="live_run", help="Newest first. The status below updates live.")
run_id = st.session_state["live_run"]
following = run_id in active_ids or by_id[run_id].status in ("queued", "running") or busy_analysing(run_id)


def loss_quantity(metrics: list[dict]) -> str:
    """The loss the left panel plots: the user's choice among what this run logged (the comparable
    cross-entropy by default; runs from before it was logged have only their objective)."""
    have = loss_quantities(metrics)
    if len(have) < 2:
        return have[0] if have else "train_loss"
    return st.radio("Left panel", have, key=f"loss-{run_id}", horizontal=True,
                    format_func=lambda q: LOSS_QUANTITIES[q][0],
                    help="The cross-entropies are the same quantity for every round. The objective is what each "
                         "round minimizes: the teacher's is the cross-entropy, a student's adds τ²·KL to its "
                         "teacher, so objectives do not compare across rounds.")


@st.fragment(run_every=1.0 if following else None)
def live_view() -> None:
    handle = jobs.get(run_id)
    try:
        run = ui.store().get(run_id)
        cfg = run.config()
        if handle is None or handle.done:  # a finished run is shown only whole: damage is named, not half-drawn
            run.readable("show")
    except (RunError, OSError) as e:
        st.error(f"This run cannot be read: {ui.plain(e)}")
        ui.resume_button(by_id[run_id], key=f"resume-{run_id}")
        return
    if handle is not None and not handle.done:
        p = handle.progress()
        c1, c2 = st.columns([5, 1])
        where = terms.label(cfg.method)  # one network (or DML's peers together): its terms
        if terms.is_multi_round(cfg) and p.rounds > 1:
            who = "teacher" if p.round == 0 else f"student {p.round}"
            where = f"round {p.round} of {p.rounds - 1} ({who})"
        step = f" · step {p.step}/{p.steps}" if p.steps else ""  # 0: the split's size is known once it is loaded
        at = f"{where} · epoch {p.epoch}/{p.epochs}{step}"  # the job's counts from its first frame (jobs.planned)
        if p.status == "queued":
            c1.progress(p.fraction, text=f"queued (waits for the job before it on this device) · {at}")
        else:
            eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            c1.progress(p.fraction, text=at + eta)
        if c2.button("Cancel", key=f"cancel-{run_id}", icon=":material/stop_circle:", width="stretch"):
            handle.cancel()
            st.toast("Cancelling — finished rounds are kept; Resume continues from the last finished epoch.")
    else:
        status = run.info()
        msg = {"done": st.success, "failed": st.error, "cancelled": st.warning, "interrupted": st.warning}
        text = f"Status: **{ui.plain(status.status)}**" + (f" — {ui.plain(status.error)}" if status.error else "")
        c1, c2 = st.columns([5, 1])
        with c1:
            msg.get(status.status, st.info)(text)
        with c2:
            ui.resume_button(status, key=f"resume-{run_id}")
        if following and not busy_analysing(run_id):  # all finished: one full rerun stops the refresh
            st.rerun()
    try:
        metrics = ui.metrics(run)
    except RunError as e:  # damaged metrics.jsonl: say so, keep the page alive
        st.error(f"This run's metrics cannot be read: {ui.plain(e)}")
        return
    if not metrics:
        st.caption("The first epoch's numbers appear here as soon as it ends." if following
                   else "No epoch finished before the run stopped.")
        return
    try:
        summary = run.summary()
    except RunError as e:  # damaged while it trains
        st.error(f"This run's summary cannot be read: {ui.plain(e)}")
        return
    kept = {r.round: r.best_epoch for r in summary.rounds} if summary is not None else {}
    fig = training_curves(metrics, method=cfg.method, loss=loss_quantity(metrics), kept=kept)
    ui.chart(fig, key=f"curves-{run_id}", name=f"{run_id}-curves")
    sharp = sharpness_curves(metrics, method=cfg.method, kept=kept)
    if sharp is not None:
        st.markdown("**Sharpness during training**: λ_max of each round's training loss after every epoch "
                    "(a few warm-started Lanczos steps on a fixed training subset), beside its test accuracy.")
        ui.chart(sharp, key=f"sharpness-{run_id}", name=f"{run_id}-sharpness")
        ui.download_figure(sharp, f"{run_id}-sharpness", key=f"dl-sharp-{run_id}", caption=ui.run_caption(run_id))
    table = ui.rounds_table(summary, cfg.method) if not cfg.model.exits else None  # exits: see BYOT exits
    if table is not None:
        st.dataframe(table, hide_index=True)
        ui.download_csv(table.data.to_csv(index=False), f"{run_id}-rounds", key=f"dl-rounds-{run_id}")
    if terms.is_multi_round(cfg) and len(kept) > 1 and not (handle is not None and not handle.done):
        curvature(run, cfg, sorted(kept))
    c1, c2, c3 = st.columns(3)
    with c1:
        ui.download_figure(fig, f"{run_id}-curves", key=f"dl-fig-{run_id}", caption=ui.run_caption(run_id))
    with c2:
        ui.download_csv(lambda: records_csv(metrics), f"{run_id}-metrics",
                        key=f"dl-csv-{run_id}", label="Download metrics (CSV)")
    with c3:
        ui.download_report(run, run_id, key=f"dl-report-{run_id}")


def curvature(run, cfg, rounds: list[int]) -> None:
    """The second half of the story: are the kept students flatter than the teacher, as well as more accurate?"""
    st.subheader("More accurate, and flatter?")
    try:
        found, results, missing = run_verdicts(run)
    except (ConfigError, RunError) as e:
        st.error(f"The curvature results of this run cannot be read: {ui.plain(e)}")
        return
    job = analysing.get(run.id)
    if job is not None and not job.done:
        st.progress(job.progress().fraction, text=ui.analysis_text(job))
    elif job is not None and job.progress().status == "failed":
        st.error(f"The curvature analysis failed: {ui.plain(job.progress().error)}")
    if found:
        for v in found:
            (st.success if v.more_accurate and v.flatter else st.info)(v.sentence(round_name(v.round, cfg.method)))
        ks = sorted({k for _, k in results})
        bars = curvature_bars(ks, [results[("eigen", k)].values[0] for k in ks],
                              [results[("trace", k)].trace for k in ks],
                              [results[("trace", k)].stderr for k in ks], method=cfg.method)
        ui.chart(bars, key=f"live-curvature-{run.id}", name=f"{run.id}-curvature")
        ui.download_figure(bars, f"{run.id}-curvature", key=f"dl-curv-{run.id}", caption=ui.run_caption(run.id))
        st.caption("λ_max and trace of the training loss's Hessian at each round's kept weights (the starred epoch "
                   "above), on a fixed 512-example training subset, BatchNorm in eval mode. The **Hessian** page "
                   "adds the spectral density and the top-20 eigenvalues.")
    elif missing and (job is None or job.done):
        st.caption("Pham et al. also find the students in *flatter* minima: smaller Hessian λ_max and trace. "
                   "Compute them for this run's kept models (a background job; the run with curvature on does it "
                   "by itself).")
        if st.button("Compute λ_max and trace of every round", icon=":material/calculate:", key=f"curv-{run.id}"):
            with ui.shown_errors(stop=False):
                ui.manager().submit_analysis(run.id, curvature_spec(rounds))
                st.rerun()


live_view()


def this_run() -> str:
    """One sentence on how the selected run compares with the paper's finding."""
    try:
        summary = ui.store().get(run_id).summary()
        rounds = summary.rounds if summary is not None else ()
    except (RunError, OSError):
        return ""
    if len(rounds) < 2:
        return ""
    teacher, students = rounds[0].test_acc, [r.test_acc for r in rounds[1:]]
    above = sum(s > teacher for s in students)
    return (f"\n\n**This run:** {above} of {len(students)} finished student(s) beat the teacher's "
            f"{teacher:.2f}% (best student: {max(students):.2f}%).")


ui.explain(
    "**Left:** a training loss of every round per epoch — by default the cross-entropy against the training "
    "labels as given (30% of them flipped in the demo), the same quantity for every round; the menu above "
    "switches to the clean labels, or to each round's own objective (a student's adds τ²·KL to its teacher, "
    "so objectives do not compare across rounds). **Right:** test accuracy (solid) and validation "
    "accuracy (dotted) per epoch. The teacher (round 0) is red-orange; students are blue/green and keep the "
    "same colour on every page, each round with its own dash and marker; a ★ marks the epoch each round "
    "kept, whose accuracy the table reports. For a network with exits (BYOT, DMFL), each line on the right is "
    "one exit, "
    "from the shallowest (light) to the deepest (dark), plus their ensemble, and the left shows the training "
    "objective with each term's weighted share of it dotted (the shares add up to it). "
    "A network trained once on its terms (PS-KD, or the labels "
    "alone) is a single round.\n\n"
    "Pham et al. found that a student trained on its teacher's softened outputs ends *above* the teacher "
    "(their Table 2), and that further rounds fluctuate rather than keep improving. With noisy training "
    "labels, watch the teacher's test accuracy peak early and sag as it memorises wrong labels, while the "
    "students' curves stay higher: they learn from the teacher's soft outputs, not only from the flipped "
    "labels. Each round keeps its best-validation epoch (never chosen on the test split) or its last one "
    "(the demo, as Pham et al.); the table gives the kept model's test accuracy and its change against the "
    "teacher. Below, for the same kept models: λ_max and trace of the training loss's Hessian — Pham et al.'s "
    "second finding is that the students sit in flatter minima." + this_run())
