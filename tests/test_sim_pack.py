"""A maker's pack on the simulated board: 16 LG M50 cells at rest for two minutes must
raise no fault (a 1-LSB step of one NTC once latched TEMP_STUCK and opened both FETs)."""
from pathlib import Path

from bms_host import use_device_code

ROOT = Path(__file__).resolve().parents[1]
use_device_code()
from bms import calfile  # noqa: E402
from sim import board as simboard  # noqa: E402
from sim import runner  # noqa: E402


def test_16_cells_at_rest_for_two_minutes_raise_no_fault():
    path = str(ROOT / "calibration" / "lgm50.json")
    sim = runner.start(simboard.make_board(16, None, path, 0.8),
                       cal=calfile.load(path, 16)[0], faultlog_path=None)
    app = sim.app
    sim.run(120)
    st = app.status(False)
    assert st["faults"] == [] and app.log.events() == [], (st["faults"], app.log.events())
    assert st["fet_chg"] and st["fet_dsg"]
    assert all(0.75 < s < 0.85 for s in st["soc"]), st["soc"]
