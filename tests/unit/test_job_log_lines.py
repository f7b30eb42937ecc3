"""The lines a job's log shows, and the training rate a user reads (steps timed, pauses not)."""

from hicl_app.engine.train.rate import StepRate
from hicl_app.worker.log_lines import LogLines, progress_line


def test_progress_is_a_readable_line_at_most_twenty_times_a_stage():
    lines = LogLines()
    out = [lines.line({"type": "progress", "step": s, "total": 100, "loss": 0.5, "lr": 2e-4,
                       "samples_per_s": 41.5, "eta_s": 195}) for s in range(1, 101)]
    kept = [x for x in out if x]
    assert 19 <= len(kept) <= 22 and out[-1] is not None  # the last step always
    assert kept[-1].startswith("step 100/100") and "loss 0.5000" in kept[0] and "lr 2.00e-04" in kept[0]
    assert "41.5 samples/s" in kept[0] and "ETA 3m15s" in kept[0]
    assert "{" not in "".join(kept)


def test_other_events_read_as_sentences():
    lines = LogLines()
    assert lines.line({"type": "eval", "task": "color", "done": 0, "total": 50}) == "evaluating color (50 samples)"
    assert lines.line({"type": "eval", "task": "color", "done": 16, "total": 50}) is None
    assert lines.line({"type": "eval", "task": "color", "done": 50, "total": 50}) == "evaluated color: 50/50"
    assert lines.line({"type": "checkpoint", "step": 50, "path": "/x/step-50"}) == "checkpoint at step 50: /x/step-50"
    assert lines.line({"type": "log", "message": "resumed"}) == "resumed"
    assert lines.line({"type": "loss", "step": 3, "loss": 1.0}) is None
    assert progress_line({"step": 1, "total": 2}) == "step 1/2  ETA —"


def test_the_rate_times_the_steps_not_the_pauses_between_them():
    now = [0.0]
    meter = StepRate(window=4, clock=lambda: now[0])
    assert meter.samples_per_s() is None and meter.eta_s(10) is None
    for pause in (0.0, 100.0, 0.0):  # 100 s between two steps: a checkpoint, a stop, a slow poll
        now[0] += pause
        meter.start_step()
        now[0] += 0.5  # each step takes 0.5 s for 8 samples
        meter.end_step(8)
    assert meter.samples_per_s() == 16.0 and meter.eta_s(10) == 5.0
    for _ in range(4):  # the window forgets slow early steps (warm-up): only the last 4 count
        meter.start_step()
        now[0] += 0.25
        meter.end_step(8)
    assert meter.samples_per_s() == 32.0
