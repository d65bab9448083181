# Passive balancing: highest cells first, capped, hysteresis, never on faults or low cells.
from bms import balancing


def _bits(mask):
    return [k for k in range(16) if mask >> k & 1]


def test_bleeds_highest_cells_up_to_the_cap():
    b = balancing.Balancer(8, {"max_bleeders": 3})
    v = [3.90, 3.95, 3.91, 3.99, 3.90, 3.97, 3.96, 3.905]
    mask = b.update(v, -1.0, False)
    assert _bits(mask) == [3, 5, 6]
    assert list(b.bleed) == [0, 0, 0, 1, 0, 1, 1, 0]


def test_start_and_stop_hysteresis():
    b = balancing.Balancer(2)
    assert b.update([3.90, 3.912], 0.0, False) == 0      # 12 mV < 15 mV start
    assert b.update([3.90, 3.920], 0.0, False) == 0b10
    assert b.update([3.90, 3.908], 0.0, False) == 0b10   # still above 5 mV stop
    assert b.update([3.90, 3.904], 0.0, False) == 0
    assert b.update([3.90, 3.912], 0.0, False) == 0      # must reach start again


def test_balance_by_soc_when_given():
    b = balancing.Balancer(3)
    mask = b.update([3.9, 3.9, 3.9], 0.0, False, soc=[0.80, 0.85, 0.81])
    assert _bits(mask) == [1]


def test_never_while_faulted_discharging_low_or_invalid():
    b = balancing.Balancer(3)
    v = [3.90, 4.00, 3.90]
    assert b.update(v, 0.0, {"OV"}) == 0 and b.reason == "fault active"
    assert b.update(v, 2.0, False) == 0            # discharging
    assert b.update([3.0, 3.3, 3.0], 0.0, False) == 0
    assert b.update(v, 0.0, False, cell_st=bytearray([0, 0, 5])) == 0
    assert b.update([3.9, 4.0, float("nan")], 0.0, False) == 0
    assert b.update(v, 0.05, False) == 0b10          # at rest: allowed
    assert b.update(v, 0.0, set()) == 0b10           # empty fault set counts as no fault


def test_config_errors():
    for cfg in ({"bleeders": 2}, {"start_delta_v": 0.001}):
        try:
            balancing.Balancer(4, cfg)
            msg = ""
        except ValueError as e:
            msg = str(e)
        assert msg.startswith("balancing: "), cfg
