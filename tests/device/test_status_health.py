# bms.status() prints the state of health with its uncertainty under the table.
import bms


def test_health_line_shows_the_weakest_cell_with_its_sigma():
    d = {"soh": 0.8712, "soh_sigma": 0.0123, "capacity_ah": [4.52, 4.44, 4.6],
         "capacity_sigma_ah": [0.05, 0.061, 0.04], "r0_growth": [1.2, 1.31, 1.25],
         "r0_growth_sigma": [0.02, 0.04, 0.03]}
    line = bms.health_line(d)
    assert line == ("health: SOH 87.1 +- 1.2 %  capacity 4.440 +- 0.061 Ah  "
                    "R0 growth x1.31 +- 0.04"), line


def test_health_line_without_data_shows_dashes():
    line = bms.health_line({"soh": None, "capacity_ah": [float("nan")]})
    assert line == "health: SOH - +- - %  capacity - +- - Ah  R0 growth x- +- -", line
