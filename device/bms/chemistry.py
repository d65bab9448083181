# Cell limits per chemistry, one table for the device and the host. The fit writes them
# into a calibration's "limits" (the currents as C-rates times the fitted capacity);
# protection falls back on the voltage window when a calibration gives none. Each value
# lies inside calfile.MAXIMA, the absolute maxima no calibration may pass.
# Plain dicts of numbers: this module runs on MicroPython.
LIMITS = {
    # LG M50 (5 Ah): 2.5..4.2 V, the datasheet's discharge cut-off and charge voltage (the
    # capacity and SOC 0 of every fit and of the measured data are counted to 2.5 V);
    # 2C discharge, 1C charge (the datasheet allows 1.5C / 0.7C continuous; these are the
    # protection trip levels the project chose).
    "nmc": {"v_min": 2.5, "v_max": 4.2, "i_discharge_c": 2.0, "i_charge_c": 1.0,
            "t_charge_min_c": 0.0, "t_charge_max_c": 45.0, "t_discharge_min_c": -20.0,
            "t_discharge_max_c": 60.0, "t_core_max_c": 60.0},
    # A123 26650 (2.3 Ah): 2.0..3.6 V; LFP takes high currents (datasheet 50 A continuous
    # discharge, 10 A fast charge); kept at 4C / 2C, about what the model was fitted to.
    "lfp": {"v_min": 2.0, "v_max": 3.6, "i_discharge_c": 4.0, "i_charge_c": 2.0,
            "t_charge_min_c": 0.0, "t_charge_max_c": 45.0, "t_discharge_min_c": -20.0,
            "t_discharge_max_c": 60.0, "t_core_max_c": 60.0},
}
