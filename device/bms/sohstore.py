# State of health on flash, so that a reboot does not forget what the cells taught.
#
# One small JSON file: per cell the capacity (Ah) and its sigma, the resistance factor
# (against the calibration's R0 table, kept only while that calibration is in use) and
# the number of capacity measurements behind them. Written to a temporary file, then
# renamed over the old one: a power cut leaves the old file or the new one.
#
# What is written moves from what was written before by at most MAX_DAY_FRAC of the
# nominal capacity (and MAX_DAY_R of the resistance factor) per day of running: one
# wrong measurement, or a bug, cannot rewrite a cell's history at once; the estimate
# in memory is not held back. Saved every SAVE_S of running, never in a fast tick.
import json
import os

PATH = "soh.json"
SAVE_S = 3600.0
MAX_DAY_FRAC = 0.1
MAX_DAY_R = 0.2
VERSION = 1


def _toward(old, new, step):
    if new > old + step:
        return old + step
    if new < old - step:
        return old - step
    return new


class SohStore:
    def __init__(self, path=PATH):
        self.path = path
        self.saved = None          # the cells' entries as last written (or read)
        self.cal = None            # calibration checksum they belong to
        self.run_s = 0.0           # running time since the last save
        self.note = None           # why the stored state was not used, if it was not
        self.writes = 0

    def read(self):
        """The stored document, or None (no file yet, or unreadable: self.note says)."""
        if self.path is None:
            return None
        try:
            with open(self.path) as f:
                text = f.read()
        except OSError:
            # a power cut between save's remove and rename leaves only the new file
            try:
                with open(self.path + ".tmp") as f:
                    text = f.read()
            except OSError:
                return None
        try:
            doc = json.loads(text)
        except ValueError:
            self.note = "%s is not valid JSON: state of health starts from the calibration" \
                % self.path
            return None
        if not isinstance(doc, dict) or doc.get("version") != VERSION or \
                not isinstance(doc.get("cells"), list):
            self.note = "%s has an unknown layout: state of health starts from the " \
                "calibration" % self.path
            return None
        return doc

    def restore(self, cells, checksum):
        """Give each cell estimator what flash remembers; returns how many took it."""
        doc = self.read()
        if doc is None:
            return 0
        n = 0
        same_cal = doc.get("cal") == checksum
        for k, e in enumerate(doc["cells"]):
            if k >= len(cells) or not isinstance(e, dict):
                break
            c = cells[k]
            try:
                cap = float(e["cap_ah"])
                sig = float(e["cap_sigma_ah"])
                r0 = float(e["r0"])
            except (KeyError, TypeError, ValueError):
                continue
            nom = c.nominal_ah
            if not (0.3 * nom < cap < 1.5 * nom and 0.0 < sig < nom):
                continue
            c.cap.reset(cap, sig)
            c.cap.pairs = int(e.get("pairs", 0))
            if same_cal and 0.3 < r0 < 5.0:
                c.r0_slow = r0
                c.rls.scale = r0
            n += 1
        self.saved = doc["cells"][:len(cells)]
        self.cal = doc.get("cal")
        return n

    def tick(self, cells, dt_s, checksum):
        """Count running time; save when SAVE_S has passed. Returns True if it wrote."""
        self.run_s += dt_s
        if self.run_s < SAVE_S or self.path is None or not cells:
            return False
        self.save(cells, checksum)
        return True

    def save(self, cells, checksum):
        days = self.run_s / 86400.0
        self.run_s = 0.0
        old = self.saved or []
        out = []
        for k, c in enumerate(cells):
            cap, sig = c.cap.capacity_ah, c.cap.sigma_ah
            r0 = c.r0_slow
            o = old[k] if k < len(old) and isinstance(old[k], dict) else None
            # from what was written before; the first time from the calibration
            cap0 = o["cap_ah"] if o is not None else c.nominal_ah
            r00 = o["r0"] if o is not None and self.cal == checksum else 1.0
            cap = _toward(cap0, cap, MAX_DAY_FRAC * c.nominal_ah * days)
            r0 = _toward(r00, r0, MAX_DAY_R * days)
            # held back: the sigma covers the distance to the estimate
            d = c.cap.capacity_ah - cap
            d = d if d > 0.0 else -d
            sig = sig if sig > d else d
            # float(): a backend's array element (ulab's, numpy's on the host) is no float
            out.append({"cap_ah": float(cap), "cap_sigma_ah": float(sig), "r0": float(r0),
                        "pairs": c.cap.pairs})
        text = json.dumps({"version": VERSION, "cal": checksum, "cells": out})
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.remove(self.path)      # FAT cannot rename over an existing file
        except OSError:
            pass
        os.rename(tmp, self.path)
        self.saved = out
        self.cal = checksum
        self.writes += 1
