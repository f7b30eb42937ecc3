"""Continual-learning metrics on hand-made matrices, with the arithmetic written out."""

from __future__ import annotations

import math

import pytest

from hicl_app.core.clmetrics import METRICS, compute, format_metrics, format_table, read_csv

# R[t][j]: score on task j after training task t (rows: after task 1, 2, 3).
R = [
    [80.0, 10.0, 5.0],
    [88.0, 90.0, 20.0],
    [50.0, 70.0, 85.0],
]
ZERO_SHOT = [30.0, 15.0, 10.0]


def test_full_3x3_matrix():
    m = compute(R, ZERO_SHOT)
    assert tuple(m) == METRICS
    # MFT = mean of the diagonal = (80 + 90 + 85) / 3 = 85
    assert m["mft"] == pytest.approx(85.0)
    # Last = mean of the last row = (50 + 70 + 85) / 3 = 68.3333
    assert m["last"] == pytest.approx(205 / 3)
    # Avg = mean over t of mean over j <= t:
    #   t=1: 80;  t=2: (88 + 90)/2 = 89;  t=3: (50 + 70 + 85)/3 = 68.3333
    #   -> (80 + 89 + 68.3333) / 3 = 79.1111
    assert m["avg"] == pytest.approx((80 + 89 + 205 / 3) / 3)
    # BWT = mean over j < T of R[T][j] - R[j][j] = ((50 - 80) + (70 - 90)) / 2 = -25
    assert m["bwt"] == pytest.approx(-25.0)
    # Forgetting = mean over j < T of max_{t in [j, T-1]} R[t][j] - R[T][j]:
    #   j=1: max(80, 88) - 50 = 38;  j=2: max(90) - 70 = 20  -> 29
    # (differs from -BWT because task 1 improved to 88 after task 2)
    assert m["forgetting"] == pytest.approx(29.0)
    # FWT = mean over j > 1 of R[j-1][j] - zero_shot[j]:
    #   j=2: 10 - 15 = -5;  j=3: 20 - 10 = 10  -> 2.5
    assert m["fwt"] == pytest.approx(2.5)


def test_fwt_needs_zero_shot():
    assert compute(R)["fwt"] is None


def test_fwt_skips_missing_zero_shot_cells():
    # Only j=3 has a zero-shot score: 20 - 10 = 10
    assert compute(R, [None, None, 10.0])["fwt"] == pytest.approx(10.0)
    assert compute(R, [30.0, float("nan"), None])["fwt"] is None


def test_partial_run_two_stages_of_three():
    rows = R[:2]
    m = compute(rows, ZERO_SHOT)
    # T = 2 (last complete row is row 2)
    assert m["mft"] == pytest.approx((80 + 90) / 2)  # 85
    assert m["last"] == pytest.approx((88 + 90) / 2)  # 89 (tasks trained so far only)
    assert m["avg"] == pytest.approx((80 + 89) / 2)  # 84.5
    assert m["bwt"] == pytest.approx(88 - 80)  # +8
    assert m["forgetting"] == pytest.approx(80 - 88)  # max over t in [1, 1] = 80 -> -8
    # FWT: j=2: 10 - 15 = -5; j=3: R[2][3] = 20 (row 2 is in the snapshot) - 10 = 10 -> 2.5
    assert m["fwt"] == pytest.approx(2.5)


def test_partial_run_last_row_still_being_evaluated():
    # Row 2 has task 1's score but not yet task 2's: it is not complete, so the metrics are
    # those of the run after task 1.
    rows = [[80.0, 10.0, None], [88.0, None, None]]
    m = compute(rows, ZERO_SHOT)
    assert m["mft"] == 80.0
    assert m["last"] == 80.0
    assert m["avg"] == 80.0
    assert m["bwt"] is None
    assert m["forgetting"] is None
    assert m["fwt"] == pytest.approx(10 - 15)  # only j=2 from row 1


def test_missing_cells_are_ignored():
    rows = [
        [80.0, None, None],
        [None, 90.0, None],  # task 1 was not re-evaluated after task 2
        [50.0, 70.0, 85.0],
    ]
    m = compute(rows, ZERO_SHOT)
    assert m["mft"] == pytest.approx(85.0)
    assert m["last"] == pytest.approx(205 / 3)
    # Avg: (80 + 90 + 68.3333) / 3 -- row 2's mean is over its present cell only
    assert m["avg"] == pytest.approx((80 + 90 + 205 / 3) / 3)
    assert m["bwt"] == pytest.approx(-25.0)
    # Forgetting: j=1: max over the present R[1][1] = 80 -> 30; j=2: 90 - 70 = 20 -> 25
    assert m["forgetting"] == pytest.approx(25.0)
    assert m["fwt"] is None  # R[1][2] and R[2][3] missing


def test_nan_is_missing():
    rows = [[80.0, float("nan"), math.nan], [88.0, 90.0, math.nan], [50.0, 70.0, 85.0]]
    m = compute(rows)
    assert m["last"] == pytest.approx(205 / 3)
    assert m["avg"] == pytest.approx((80 + 89 + 205 / 3) / 3)


def test_short_rows_are_padded():
    rows = [[80.0], [88.0, 90.0], [50.0, 70.0, 85.0]]
    m = compute(rows)
    assert m["mft"] == pytest.approx(85.0)
    assert m["bwt"] == pytest.approx(-25.0)


def test_single_task():
    m = compute([[75.0]])
    assert m == {
        "mft": 75.0,
        "last": 75.0,
        "avg": 75.0,
        "bwt": None,
        "forgetting": None,
        "fwt": None,
    }


def test_joint_training_one_row():
    m = compute([[70.0, 80.0, 90.0]], ZERO_SHOT)
    # Last = Avg = mean of the row = 80; sequence metrics undefined.
    assert m == {
        "mft": None, "last": 80.0, "avg": 80.0, "bwt": None, "forgetting": None, "fwt": None
    }
    # Missing cells ignored: (70 + 90) / 2
    assert compute([[70.0, None, 90.0]])["last"] == 80.0


def test_one_row_read_as_a_sequence_when_told():
    m = compute([[70.0, 10.0, None]], ZERO_SHOT, joint=False)
    assert m["mft"] == 70.0 and m["last"] == 70.0 and m["avg"] == 70.0
    assert m["fwt"] == pytest.approx(10 - 15)
    with pytest.raises(ValueError):
        compute(R, joint=True)


def test_empty_and_all_missing():
    assert compute([]) == {k: None for k in METRICS}
    assert compute([[None, None], [None, None]]) == {k: None for k in METRICS}


def test_errors():
    with pytest.raises(ValueError, match="row 1, column 0"):
        compute([[1.0, 2.0], ["x", 3.0]])
    with pytest.raises(ValueError, match="rows"):
        compute([[1.0], [2.0]])  # two stages, one task
    with pytest.raises(ValueError, match="zero_shot"):
        compute(R, [1.0, 2.0])
    with pytest.raises(ValueError):
        compute([[float("inf")]])


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def test_read_csv_with_header(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("task_a, task_b, task_c\n80,10,5\n88,90,\n50,70,nan\n\n", encoding="utf-8")
    names, matrix = read_csv(path)
    assert names == ["task_a", "task_b", "task_c"]
    assert matrix == [[80.0, 10.0, 5.0], [88.0, 90.0, None], [50.0, 70.0, None]]


def test_read_csv_without_header_and_comments(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("# after each task\n80,,\n88.5,90,NaN\n", encoding="utf-8")
    names, matrix = read_csv(path)
    assert names is None
    assert matrix == [[80.0, None, None], [88.5, 90.0, None]]
    assert compute(matrix)["last"] == pytest.approx((88.5 + 90) / 2)


def test_read_csv_round_trip_of_metrics(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("\n".join(",".join(str(v) for v in row) for row in R) + "\n")
    _, matrix = read_csv(path)
    assert compute(matrix, ZERO_SHOT) == compute(R, ZERO_SHOT)


def test_read_csv_bad_cell_names_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b\n80,10\n88,oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3, column 2: 'oops'"):
        read_csv(path)


def test_read_csv_ragged_row_names_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("80,10,5\n88,90\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: 2 cells, but line 1 has 3"):
        read_csv(path)


def test_read_csv_bad_header(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,,c\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1, column 2: empty task name"):
        read_csv(path)
    path.write_text("a,a\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="repeated"):
        read_csv(path)


def test_read_csv_empty(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no rows"):
        read_csv(path)


# ------------------------------------------------------------------------------------------
# Display
# ------------------------------------------------------------------------------------------


def test_format_table():
    text = format_table(["imagenet", "vqa", "caption"], [[80.0, None, None], [70.5, 85.25, None]])
    lines = text.splitlines()
    assert len(lines) == 3
    assert len({len(line) for line in lines}) == 1  # aligned
    assert lines[0].split() == ["imagenet", "vqa", "caption"]
    assert lines[1].split() == ["after", "imagenet", "80.00", "\u2014", "\u2014"]
    assert lines[2].split() == ["after", "vqa", "70.50", "85.25", "\u2014"]
    # Numbers right-aligned under their headers.
    assert lines[0].index("caption") + len("caption") == lines[2].rindex("\u2014") + 1


def test_format_table_defaults():
    text = format_table(None, [[1.0, 2.0]])
    assert text.splitlines()[0].split() == ["T1", "T2"]
    assert text.splitlines()[1].split() == ["joint", "1.00", "2.00"]
    text = format_table(None, R, digits=1, row_labels=["s1", "s2", "s3"])
    assert text.splitlines()[3].split() == ["s3", "50.0", "70.0", "85.0"]
    with pytest.raises(ValueError):
        format_table(["a"], R)


def test_format_metrics():
    line = format_metrics(compute(R))
    assert line.startswith("MFT 85.00  Last 68.33")
    assert line.endswith("FWT \u2014")
