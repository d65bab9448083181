"""A folder of traces as fit cases: names {profile}_{ambient}C.csv, roles, SOC per row."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from .. import ecm, UserError
from ..traces import read_trace
from .options import FIT_PROFILES


class Case:
    def __init__(self, path, profile, ambient_c, role, cols):
        self.path = Path(path)
        self.name = self.path.stem
        self.profile = profile
        self.ambient_c = float(ambient_c)
        self.role = role
        self.cols = cols
        # the hysteresis state at row 0 when the manifest gives it (else None: the branch
        # the first current leaves, ecm.first_branch)
        self.h0 = None

    def __repr__(self):
        return "Case(%s, %s)" % (self.name, self.role)


_NAME = re.compile(r"^(?P<profile>[a-z0-9_]+?)_(?P<amb>m?\d+(?:\.\d+)?)C$")


def _tag_to_c(tag):
    return -float(tag[1:]) if tag.startswith("m") else float(tag)


def load_dataset(folder, ambients=None, fit_profiles=None):
    """Cases of a data folder. The fit decides its own split: a trace is fit-role when its
    profile is in fit_profiles (default FIT_PROFILES), validation otherwise; the manifest's
    role is kept as `manifest_role` for the record."""
    if fit_profiles is None:
        fit_profiles = FIT_PROFILES


    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("data folder %s does not exist (make it with bms-host synth)" % folder)
    roles, h0s, manifest = {}, {}, {}
    mpath = folder / "manifest.json"
    if mpath.exists():
        try:
            manifest = json.loads(mpath.read_text())
            for f in manifest.get("files", []):
                roles[f["file"]] = f.get("role")
                if f.get("init_hysteresis_state") is not None:
                    h0s[f["file"]] = float(f["init_hysteresis_state"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError("manifest %s is not valid JSON with a files list; fix or "
                            "delete it" % mpath) from None
    cases = []
    for path in sorted(folder.glob("*.csv")):
        m = _NAME.match(path.stem)
        if not m:
            continue
        amb = _tag_to_c(m.group("amb"))
        if ambients is not None and not any(abs(amb - a) < 1e-6 for a in ambients):
            continue
        prof = m.group("profile")
        role = "fit" if prof in fit_profiles else "validation"
        cols = read_trace(path)
        if "ambient_c" not in cols:
            cols["ambient_c"] = np.full(len(cols["time_s"]), amb)
        case = Case(path, prof, amb, role, cols)
        case.manifest_role = roles.get(path.name)
        case.h0 = h0s.get(path.name)
        cases.append(case)
    if not cases:
        raise UserError("no traces named {profile}_{ambient}C.csv in %s" % folder)
    need = [p for p in ("pocv_dis", "pocv_chg", "hppc")
            if not any(c.profile == p and c.role == "fit" for c in cases)]
    if need:
        raise UserError("data folder %s has no fit-role %s trace: the fit needs C/20 "
                        "discharge and charge and HPPC at each temperature (check "
                        "--fit-profiles)" % (folder, need[0]))
    return cases, manifest


def dataset_sha256(cases, manifest):
    if manifest.get("dataset_sha256") and len(cases) == len(manifest.get("files", [])):
        return manifest["dataset_sha256"]
    h = hashlib.sha256()
    for c in sorted(cases, key=lambda c: c.path.name):
        h.update(c.path.name.encode() + b"\0"
                 + hashlib.sha256(c.path.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def case_soc(case, capacity_ah, tables=None):
    """SOC per row: soc_true when the trace has it, else coulomb counting from OCV."""
    if "soc_true" in case.cols:
        return case.cols["soc_true"]
    if tables is None:
        s0 = 1.0 if case.profile == "pocv_dis" else 0.0 if case.profile == "pocv_chg" else 0.5
    else:
        s0 = tables.soc_from_ocv(case.cols["voltage_v"][0], case.cols["temperature_c"][0])
    i = case.cols["current_a"].copy()
    return ecm.soc_path(s0, i, ecm.dts(case.cols["time_s"]), capacity_ah)


def case_shift(case, diffusion):
    """The diffusion shift per row of a trace at its measured core temperature."""
    if not diffusion or (diffusion["shift_per_a"] == 0.0
                         and ecm.charge_gain(diffusion) == 0.0):
        return None
    tc = case.cols.get("temp_core_c", case.cols["temperature_c"])
    return ecm.shift_path(case.cols["time_s"], case.cols["current_a"], tc, diffusion)


def split_record(cases):
    """Which traces the fit used and which it held out (and where that differs from the
    manifest's roles)."""
    fit_p = sorted({c.profile for c in cases if c.role == "fit"})
    val_p = sorted({c.profile for c in cases if c.role != "fit"})
    moved = sorted(c.name for c in cases
                   if getattr(c, "manifest_role", None) not in (None, c.role))
    return {"fit_profiles": fit_p, "validation_profiles": val_p,
            "fit_cases": sorted(c.name for c in cases if c.role == "fit"),
            "validation_cases": sorted(c.name for c in cases if c.role != "fit"),
            "role_differs_from_manifest": moved}
