"""bms-host bench zero: the current sensor's zero on the simulated board (a short rest)."""
from bms_host import bench_zero


def test_the_zero_keeps_an_lfp_rest_on_its_soc(capsys):
    assert bench_zero.main(["--hours", "1"]) == 0
    out = capsys.readouterr().out
    rows = [ln.split("|") for ln in out.splitlines() if ln.startswith(("lfp ", "lgm50 "))]
    assert len(rows) == 4, out
    zeroed = {r[0].strip(): float(r[4]) for r in rows if "zero_current" in r[1]}
    closed = {r[0].strip(): float(r[4]) for r in rows if "closed" in r[1]}
    # an hour of +30 mA on the 2.28 Ah LFP is 1.3 points; the zero takes nearly all of it
    assert abs(zeroed["lfp"]) < 0.2 and closed["lfp"] < -1.0, out
    assert "PASS" in out.splitlines()[-1], out


def test_a_rest_out_of_range_is_refused(capsys):
    assert bench_zero.main(["--hours", "0"]) == 2
    assert "--hours takes 0 to 48 hours" in capsys.readouterr().err
