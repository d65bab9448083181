"""The calibration body the device reads: tables, limits, thermal, provenance."""
import json
import math
import os
import time

from .. import __version__, use_device_code
from .dataset import dataset_sha256, split_record
from .options import FIT_VERSION

use_device_code()
from bms import model  # noqa: E402
# the device's chemistry table (device/bms/chemistry.py): protection reads the same
from bms.chemistry import LIMITS  # noqa: E402


def _round_table(a, digits):
    return [[round(float(x), digits) for x in row] for row in a]


# per case in the provenance (the ambient is in the case's name; the report has the rest)
PROVENANCE_METRICS = ("role", "rmse_mv", "bias_mv", "max_mv", "t_rmse_c")


def build_calibration(tb, info, cell_id, chemistry, results):
    lim = LIMITS[chemistry]
    cap = info["capacity_ah"]
    tabs = {"soc": [round(float(s), 6) for s in tb.soc],
            "temp_c": [round(float(t), 3) for t in tb.temp]}
    for name in model.TABLES:
        if name == "rh_ohm" and not tb.heat_rh:
            continue   # no heat table of its own: the device's heat takes R0
        # volts and ohms to the micro-unit (1 uOhm at 10 A is 10 uV): the file, signed,
        # must fit a board's MQTT receive buffer (32 KB)
        tabs[name] = _round_table(tb.tab[name], 4 if name in ("tau1_s", "tau2_s") else
                                  5 if name == "i0_a" else 6)
    created = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = time.gmtime(int(created)) if created else time.gmtime()
    body = {
        "schema": 1,
        "cell": {"id": cell_id, "chemistry": chemistry, "capacity_ah": round(cap, 6)},
        "limits": {"v_min": lim["v_min"], "v_max": lim["v_max"],
                   "i_discharge_max_a": math.floor(lim["i_discharge_c"] * cap * 2) / 2,
                   "i_charge_max_a": math.floor(lim["i_charge_c"] * cap * 2) / 2,
                   "t_charge_min_c": lim["t_charge_min_c"],
                   "t_charge_max_c": lim["t_charge_max_c"],
                   "t_discharge_min_c": lim["t_discharge_min_c"],
                   "t_discharge_max_c": lim["t_discharge_max_c"],
                   "t_core_max_c": lim["t_core_max_c"]},
        "tables": tabs,
        "thermal": {k: round(v, 6) for k, v in tb.thermal.items()},
        "diffusion": {k: round(float(v), 6) for k, v in tb.diffusion.items()},
        **({"hysteresis": {"m_v": _round_table(tb.hyst["m_v"], 6),
                           "gamma": float(tb.hyst["gamma"])}} if tb.hyst is not None else {}),
        "provenance": {
            "tool_version": "bms-host %s (%s)" % (__version__, FIT_VERSION),
            "dataset_sha256": dataset_sha256(info["cases"], info["manifest"]),
            "dataset": info["manifest"].get("cell", ""),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
            "fit_options": {k: v for k, v in info["opts"].items() if not k.startswith("_")},
            "split": split_record(info["cases"]),
            "model": "device/bms/model.py: OCV(soc - d) - R0*i - 2 RC (R0c, R2c on charge) - "
                     "Butler-Volmer b*asinh(i/2i0), bilinear in (soc, core temperature); "
                     "core-surface-ambient thermal, backward Euler, heat "
                     "i*(Rh i + k1 v1 + eta) + k2*i*v2 (Rh = tables.rh_ohm, else R0; "
                     "k1, k2 = thermal.heat_v1_fraction, heat_v2_fraction); "
                     "d = diffusion shift, a first-order lag of the current (diffusion.*); "
                     "with hysteresis.*: + M(soc, T)*h, h the one-state hysteresis "
                     "(device/bms/hysteresis.py)",
            # the headline numbers per case (the report has the rest): the file must fit
            # a board's MQTT receive buffer when it is pushed signed
            "rmse": {name: {k: (round(m[k], 3) if isinstance(m[k], float) else m[k])
                            for k in PROVENANCE_METRICS if k in m}
                     for name, m in sorted(results.items())},
        },
    }
    return body


def guess_chemistry(manifest, folder):
    text = json.dumps(manifest).lower() + str(folder).lower()
    return "lfp" if ("lfp" in text or "prada" in text) else "nmc"
