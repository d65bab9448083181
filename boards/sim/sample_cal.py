# The simulated board's default cell, and the device tests' calibration: a small,
# realistic NMC calibration that does not depend on the pipeline's output (its numbers
# resemble an LG M50 at 25 degC).
import math

SOC = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
TEMP = [0.0, 25.0, 45.0]


def _ocv(s):
    return 3.0 + 0.70 * s + 0.42 * (1 - math.exp(-12 * s)) + 0.08 * s * s


def calibration(capacity_ah=5.0):
    def grid(f):
        return [[f(s, t) for s in SOC] for t in TEMP]

    def r_temp(t):
        return math.exp(2.0 * (25.0 - t) / 25.0 * 0.7)

    return {
        "schema": 1,
        "cell": {"id": "sample-nmc", "chemistry": "nmc", "capacity_ah": capacity_ah},
        "limits": {"v_min": 2.5, "v_max": 4.2, "i_discharge_max_a": 10.0,
                   "i_charge_max_a": 5.0, "t_charge_min_c": 0.0, "t_charge_max_c": 45.0,
                   "t_discharge_min_c": -20.0, "t_discharge_max_c": 60.0,
                   "t_core_max_c": 60.0},
        "tables": {
            "soc": SOC, "temp_c": TEMP,
            "ocv_v": grid(lambda s, t: _ocv(s) + 0.0002 * (t - 25.0)),
            "r0_ohm": grid(lambda s, t: 0.018 * r_temp(t) * (1.0 + 0.3 * (1 - s) ** 4)),
            "r0c_ohm": grid(lambda s, t: 0.019 * r_temp(t) * (1.0 + 0.3 * (1 - s) ** 4)),
            "r1_ohm": grid(lambda s, t: 0.008 * r_temp(t)),
            "tau1_s": grid(lambda s, t: 12.0),
            "r2_ohm": grid(lambda s, t: 0.012 * r_temp(t) * (1.0 + 0.5 * (1 - s) ** 3)),
            "tau2_s": grid(lambda s, t: 300.0),
        },
        "thermal": {"c_core_j_per_k": 70.0, "c_surf_j_per_k": 5.0,
                    "r_core_surf_k_per_w": 2.35, "r_surf_amb_k_per_w": 12.0},
        # solid diffusion: 1 % SOC of shift per C at 25 degC, 100 s lag
        "diffusion": {"shift_per_a": 0.01 / capacity_ah, "tau_s": 100.0,
                      "activation_k": 3600.0},
    }


def drive_current(k, capacity_ah=5.0):
    """A repeating dynamic load (A, discharge positive) for 1 s samples: mostly
    discharge pulses with regen, net about C/3."""
    ph = k % 120
    c = capacity_ah
    if ph < 20:
        return 0.4 * c
    if ph < 30:
        return 1.5 * c
    if ph < 40:
        return -0.5 * c
    if ph < 70:
        return 0.25 * c
    if ph < 75:
        return 2.0 * c
    if ph < 90:
        return 0.0
    return 0.35 * c
