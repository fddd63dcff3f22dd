"""Seed paper 003's grid of terms (Compare page): grouping runs that differ only in their terms and seed,
mean ± std per row, the missing rows, the ordering against the paper. Pure: configs and fake calibrations."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdcore.analysis.compare import grid_row, missing_runs, order_agreement, term_grid, term_grid_csv, term_groups
from sdcore.config import SEED003_ROWS, preset, seed003_method

TINY = {"epochs": 2, "data.subset": 300, "model.width": 0.5}


def run_of(row: str, seed: int = 0, **changes):
    """(a run folder that is never read, its config): the demo-<row> preset, tiny, with ``changes``."""
    cfg = preset(f"demo-{row}").replace(**{**TINY, **changes}, seed=seed).validate()
    return SimpleNamespace(id=f"2026-{row}-s{seed}-{len(changes)}", path=Path("/nowhere")), cfg


def calibration(top1: float) -> list:
    report = SimpleNamespace(top1_err=top1, top5_err=top1 / 2, nll=1.0, ece=0.05, aurc=0.06)
    return [SimpleNamespace(round=0, exit=None, ensemble=False, report=report)]


def test_rows_and_methods_map_both_ways():
    assert [seed003_method(r) for r in SEED003_ROWS][:2] == ["ce", "byot"]
    assert all(grid_row(seed003_method(r)) == r for r in SEED003_ROWS)
    assert all(preset(f"demo-{r}").method == seed003_method(r) for r in SEED003_ROWS)


def test_runs_differing_in_terms_and_seed_form_one_grid():
    runs = [run_of(r, s) for r in ("baseline", "pskd", "pskd-byot-dmfl") for s in (0, 1)]
    runs += [(SimpleNamespace(id="kd"), preset("demo").replace(**TINY)),  # multi-round KD and DML: not rows
             (SimpleNamespace(id="dml"), preset("demo-dml").replace(**TINY))]
    (group,) = term_groups(runs)
    assert group.methods == ["ce", "pskd", "pskd+byot+dmfl"] and group.seeds == [0, 1] and len(group.members) == 6
    assert group.members[0][1].method == "pskd+byot+dmfl"  # the most specific run sets the grid's settings
    assert dict(group.settings)["byot_style"] == "luan" and "+exits" not in group.label


def test_other_term_settings_make_another_grid_that_the_baseline_joins_too():
    runs = [run_of("baseline"), run_of("byot"), run_of("byot", byot_style="sdlab"), run_of("pskd", pskd_alpha=0.5)]
    groups = term_groups(runs)
    assert len(groups) == 2
    styles = sorted(dict(g.settings)["byot_style"] for g in groups)
    assert styles == ["luan", "sdlab"]
    assert all("ce" in g.methods for g in groups)  # the labels alone use no term setting
    # Another dataset or width is another setting: with one method each, no grid.
    assert term_groups([run_of("baseline"), run_of("byot", **{"model.width": 1.0})]) == []


def test_grid_rows_are_mean_and_std_over_seeds_in_the_papers_order():
    runs = [run_of("baseline", 0), run_of("baseline", 1), run_of("dmfl", 0)]
    (group,) = term_groups(runs)
    cals = {runs[0][0].id: calibration(20.0), runs[1][0].id: calibration(30.0), runs[2][0].id: calibration(10.0)}
    metrics = {runs[0][0].id: [{"round": 0, "epoch": e, "epoch_time": t} for e, t in ((1, 2.0), (2, 4.0))]}
    rows = term_grid(group, cals, metrics)
    assert [r.row for r in rows] == list(SEED003_ROWS)
    base, dmfl = rows[0], rows[3]
    assert base.seeds == (0, 1) and base.values["top-1 error (%)"].mean == pytest.approx(25.0)
    assert base.values["top-1 error (%)"].std == pytest.approx(7.0710678)  # sample std of 20, 30
    assert base.values["ECE (%)"].mean == pytest.approx(5.0) and base.values["AURC (×10³)"].mean == pytest.approx(60)
    assert base.values["time per epoch (s)"].n == 1 and base.values["time per epoch (s)"].mean == 3.0
    assert dmfl.values["top-1 error (%)"].n == 1 and dmfl.values["top-1 error (%)"].std == 0.0
    assert rows[1].run_ids == () and all(v is None for v in rows[1].values.values())
    lines = term_grid_csv(rows).splitlines()
    assert lines[0].startswith("row,method,seeds,n,top-1 error (%) mean,top-1 error (%) std")
    assert lines[1].startswith("baseline,ce,0 1,2,25.0000,7.0711") and lines[2] == "byot,byot,,0" + "," * 12


def test_missing_runs_complete_the_grid():
    runs = [run_of("baseline", 0), run_of("pskd-byot-dmfl", 0), run_of("pskd-byot-dmfl", 1)]
    (group,) = term_groups(runs)
    missing = missing_runs(group)
    assert len(missing) == 8 * 2 - 3
    assert {(row, seed) for row, seed, _ in missing} >= {("baseline", 1), ("dmfl", 0), ("byot", 1)}
    for row, seed, cfg in missing:
        cfg.validate()  # exits and rounds follow the row's terms
        assert (cfg.method, cfg.seed, cfg.name) == (seed003_method(row), seed, f"demo-{row}")
    (full,) = term_groups(runs + [(SimpleNamespace(id=f"new-{i}"), c) for i, (_, _, c) in enumerate(missing)])
    assert len(full.methods) == 8 and missing_runs(full) == []


def test_order_agreement_counts_pairs_in_the_same_order():
    paper = {"a": 1.0, "b": 2.0, "c": 3.0}
    assert order_agreement({"a": 5, "b": 6, "c": 7}, paper) == (3, 3)
    assert order_agreement({"a": 7, "b": 6}, paper) == (0, 1)
    assert order_agreement({"a": 1, "c": 2, "x": 0}, paper) == (1, 1)  # rows the paper lacks are left out
