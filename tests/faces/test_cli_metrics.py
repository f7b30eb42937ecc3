"""`hicl metrics --matrix`: the paper-comparison path, no run needed."""

import json


def test_metrics_from_csv(cli, tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("a,b,c\n80,,\n60,70,nan\n50,65,90\n")
    res = cli("metrics", "--matrix", f, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["mft"] == 80.0 and data["bwt"] == -17.5 and data["forgetting"] == 17.5
    assert abs(data["last"] - 205 / 3) < 1e-9 and abs(data["avg"] - (80 + 65 + 205 / 3) / 3) < 1e-9
    assert data["matrix"][0] == [80.0, None, None] and data["tasks"] == ["a", "b", "c"]
    table = cli("metrics", "--matrix", f).stdout
    assert "after c" in table and "BWT -17.50" in table


def test_metrics_needs_exactly_one_source(cli, tmp_path):
    assert cli("metrics").exit_code == 3
    f = tmp_path / "h.csv"
    f.write_text("a,b\n")
    res = cli("metrics", "--matrix", f)
    assert res.exit_code == 3 and "no rows" in res.stderr
