"""The Fine-tune widget's run state, tested without Qt or a viewer (core/finetune_control.py)."""

from types import SimpleNamespace

import numpy as np

from napari_unet.core.finetune_control import (
    BELOW_BASE_POPUP_S,
    BELOW_BASE_RUN,
    PREVIEW_MAX,
    FinetuneRun,
    check_annotation,
    preview_region,
)
from napari_unet.core.training import Progress


def _trainer(base=0.8, best=0.8, top=None, step=10):
    return SimpleNamespace(base_score=base, best_score=best, top_score=top if top is not None else best, step=step,
                           history=[Progress(step, 20, 0.3, 12.0)], cfg=SimpleNamespace(keep_within=0.005))


def _run(budget=60.0, **kw):
    run = FinetuneRun(budget)
    up = run.ready(_trainer(**kw), SimpleNamespace(held_out=True, base_name="nuclei"))
    assert "held-out strokes" in up.status
    return run


def test_progress_reports_budget_share_and_kept_score():
    run = _run(best=0.85)
    assert run.progress(Progress(0, 20, 0.0, 0.0, val_score=0.8)).status == "base model score 0.800; training..."
    up = run.progress(Progress(3, 20, 0.4, 15.0))
    assert up.progress == 0.25 and up.status.startswith("step 3, 15 s: loss 0.400")
    assert "Stop keeps weights scoring 0.850 (base 0.800)" in up.status
    assert run.progress(Progress(4, 20, 0.4, 90.0)).progress == 1.0  # capped
    assert FinetuneRun(None).progress(Progress(4, 20, 0.4, 90.0)).progress is None  # no budget: no share


def test_below_base_needs_a_trend_and_a_popup_needs_time():
    run = _run()
    dips = [run.progress(Progress(k + 1, 20, 0.4, 3.0 * k, val_score=0.7)) for k in range(BELOW_BASE_RUN)]
    assert all(u.warning is None for u in dips[:-1])  # one or two dips: noise
    assert "below the base model's 0.800" in dips[-1].warning and dips[-1].revert
    assert dips[-1].popup is None  # early: the line only
    assert run.progress(Progress(9, 20, 0.4, 12.0, val_score=0.8)).warning == ""  # recovered: the line goes
    ups = [run.progress(Progress(10 + k, 20, 0.4, BELOW_BASE_POPUP_S + k, val_score=0.7)) for k in range(4)]
    popups = [u.popup for u in ups if u.popup]
    assert len(popups) == 1 and "stays below the base model's (0.800)" in popups[0]  # once per run
    assert run.warning_kind == "below"


def test_collapse_warning_once_and_cleared():
    run = _run()
    up = run.preview("nothing")
    assert "predicts no cells" in up.warning and up.popup and up.revert
    assert run.preview("everything").popup is None  # a popup once
    assert run.preview("").warning == ""
    assert run.preview("").warning is None  # nothing to clear


def test_finished_summaries():
    run = _run(base=0.8, best=0.8)
    up = run.finished()
    assert run.no_improvement() and "no improvement over the base model (score 0.800)" in up.status
    assert "copy of it" in up.save_tip and up.revert
    run = _run(base=0.8, best=0.9, top=0.92)
    for k in range(BELOW_BASE_RUN):  # a warning earlier in the run...
        run.progress(Progress(k + 1, 20, 0.4, BELOW_BASE_POPUP_S + k, val_score=0.7))
    up = run.finished()  # ...is moot when the kept weights beat the base model
    assert up.warning == "" and "no longer applies" in up.status
    assert "kept weights scoring 0.900 (base 0.800); the top score 0.920 was earlier" in up.status


def test_preview_region():
    assert preview_region((PREVIEW_MAX, 300)) is None  # small planes: whole
    y0, y1, x0, x1 = preview_region((2000, 3000), [[100, 200], [1099, 1399]])
    assert (y1 - y0, x1 - x0) == (PREVIEW_MAX, PREVIEW_MAX) and (y0 + y1) // 2 == 600 and (x0 + x1) // 2 == 800
    assert preview_region((2000, 3000), [[0, 0], [3, 3]]) == (680, 1320, 1180, 1820)  # a tiny view: the centre
    assert preview_region((100, 5000), None) == (0, 100, 2180, 2820)


def test_check_annotation_messages():
    ann = np.zeros((8, 8), np.uint8)
    assert "is empty" in check_annotation("im", "a", None, (8, 8), (8, 8), [ann])
    assert "made for image 'other'" in check_annotation("im", "a", "other", (8, 8), (8, 8), [ann])
    assert "has shape (4, 4)" in check_annotation("im", "a", None, (8, 8), (4, 4), [ann])
    ann[0, 0] = 1
    assert "not cell (label 2)" in check_annotation("im", "a", None, (8, 8), (8, 8), [ann])
    other = np.full((8, 8), 2, np.uint8)  # the other class painted on another image counts
    assert check_annotation("im", "a", None, (8, 8), (8, 8), [ann, other]) is None
    assert check_annotation("im", "a", None, (8, 8), (8, 8), [np.full((8, 8), 5, np.uint8)]) is None  # instances
