# State of health and state of charge on flash, so that a reboot does not forget what the
# cells taught, nor how full they are.
#
# One small JSON file: per cell the capacity (Ah) and its sigma, the resistance factor
# (against the calibration's R0 table, kept only while that calibration is in use) and
# the number of capacity measurements behind them; since version 2 also its SOC with the
# filter's own sigma and, on a cell with hysteresis (LFP), the branch h with its sigma. A
# version-1 file (SOH only) still restores the SOH. Written to a temporary file, then
# renamed over the old one: a power cut leaves the old file or the new one. A file that
# is not valid JSON, or has a malformed or implausible entry, is passed over whole with
# one sentence in self.note: nothing of it is applied.
#
# What is written moves from what was written before by at most MAX_DAY_FRAC of the
# nominal capacity (and MAX_DAY_R of the resistance factor) per day of running: one
# wrong measurement, or a bug, cannot rewrite a cell's history at once; the estimate
# in memory is not held back. Saved every SAVE_S of running, never in a fast tick.
#
# Why the SOC: on a flat OCV (LFP, 20-90 % within ~15 mV) the voltage at boot says little,
# and the unknown hysteresis branch alone is 10-30 points of SOC; real LFP BMSes keep the
# SOC in non-volatile memory for that. The SOC part is written more often than the SOH
# (a save writes both; the SOH part only moves at the hourly save):
#   - when any cell's SOC moved SOC_DELTA or its branch H_DELTA since the last save,
#   - every SOC_SAVE_S of running when anything moved at all (SOC_QUIET...),
#   - never twice within SOC_MIN_S, and compared only every SOC_CHECK_S (not per tick);
#   - App.save_state() (bms.save() at the REPL) before a planned power-off.
# A rested pack makes no SOC saves (the hourly SOH save goes on: 8,760 a year).
# Write rate: a pack cycled fully once a day moves 2 x 100 points (100 saves), its branch
# flips twice, plus the SOH saves: ~130 a day, ~50,000 a year. The ceiling is one save per
# SOC_MIN_S: 2C cycling day and night (2 points every 36 s) hits it, 60 an hour, ~530,000 a
# year. The file is ~2.4 KB for 16 LFP cells; littlefs (rp2, esp32) writes it
# copy-on-write over the filesystem's free blocks, ~2 erases of a 4 KB block per save: a
# Pico's 1408 KB filesystem (352 blocks of 100,000 cycles) takes ~17 million saves, over
# 30 years even at the ceiling.
# A save blocks the estimator tick it runs in (and the fast tick behind it) for the JSON
# and the flash write, as the hourly SOH save always did (host MicroPython: 0.66 ms for 16
# cells; the comparison every SOC_CHECK_S 0.06 ms).
import json
import math
import os

from bms import hysteresis

PATH = "soh.json"
SAVE_S = 3600.0
MAX_DAY_FRAC = 0.1
MAX_DAY_R = 0.2
VERSION = 2          # 2: each cell may carry its SOC part; 1: SOH only (still read)
SOC_SAVE_S = 600.0
SOC_MIN_S = 60.0
SOC_CHECK_S = 5.0
SOC_DELTA = 0.02     # SOC fraction (2 points)
H_DELTA = 0.2        # LFP (gamma 45): 0.2 of h is ~0.25 % of charge after a reversal
SOC_QUIET = 0.002    # the periodic save's "moved at all": SOC, its sigma, h
SIGMA_QUIET = 0.005
H_QUIET = 0.05
# At boot the stored SOC's sigma grows by the time off, which no clock here measures:
# self-discharge and the BMS's own drain (2-3 % a month at room temperature, NMC and
# LFP alike; a pack stored for months is re-read by the OCV check at boot, estimator's
# BOOT_AGREE_SIGMAS, or its next full charge), and what moved after the last save
# (up to SOC_DELTA, more at high current within SOC_MIN_S). Both in quadrature: with a
# filter sigma of 1 % the boot starts at 3.7 %.
BOOT_OFF = 0.03
# h's sigma grows by what the branch may have moved after the last save (H_DELTA).


def _toward(old, new, step):
    if new > old + step:
        return old + step
    if new < old - step:
        return old - step
    return new


def _num(e, key):
    """e[key] as a float; raises TypeError / ValueError / KeyError on a malformed entry.
    NaN fails the range checks after it."""
    v = e[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(key)
    return float(v)


class SohStore:
    def __init__(self, path=PATH):
        self.path = path
        self.saved = None          # the cells' entries as last written (or read)
        self.cal = None            # calibration checksum they belong to
        self.run_s = 0.0           # running time since the last SOH save
        self.soc_s = 0.0           # running time since the last save of any kind
        self.check_s = 0.0         # running time since the SOC part was last compared
        self.note = None           # why the stored state was not used, if it was not
        self.writes = 0
        self.soc_writes = 0        # of which saves for the SOC part (between SOH saves)
        self.soc_restored = 0      # cells started from the stored SOC's values at boot

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
        if not isinstance(doc, dict) or doc.get("version") not in (1, VERSION) or \
                not isinstance(doc.get("cells"), list):
            self.note = "%s has an unknown layout: state of health starts from the " \
                "calibration" % self.path
            return None
        return doc

    def _parse(self, doc, cells):
        """[(cap, sigma, r0, pairs, soc part or None)] for the cells, or None (self.note
        says which entry is bad). Every entry is checked before any is applied."""
        out = []
        for k, e in enumerate(doc["cells"][:len(cells)]):
            nom = cells[k].nominal_ah
            try:
                cap, sig, r0 = _num(e, "cap_ah"), _num(e, "cap_sigma_ah"), _num(e, "r0")
                pairs = int(_num(e, "pairs")) if "pairs" in e else 0
                sp = None
                if "soc" in e:
                    sp = (_num(e, "soc"), _num(e, "soc_sigma"),
                          _num(e, "h") if "h" in e else None,
                          _num(e, "h_sigma") if "h" in e else None)
            except (KeyError, TypeError, ValueError, OverflowError):
                self.note = "%s: cell %d's entry is malformed: nothing restored, state " \
                    "of health and SOC start from the calibration" % (self.path, k)
                return None
            bad = None
            if not (0.3 * nom < cap < 1.5 * nom and 0.0 < sig < nom):
                bad = "capacity %s +- %s Ah" % (cap, sig)
            elif sp is not None and not (0.0 <= sp[0] <= 1.0 and 0.0 <= sp[1] < 1.0):
                bad = "SOC %s +- %s" % (sp[0], sp[1])
            elif sp is not None and sp[2] is not None and \
                    not (-1.0 <= sp[2] <= 1.0 and 0.0 <= sp[3] <= 1.0):
                bad = "hysteresis %s +- %s" % (sp[2], sp[3])
            if bad:
                self.note = "%s: cell %d's stored %s is implausible: nothing restored, " \
                    "state of health and SOC start from the calibration" % (self.path, k, bad)
                return None
            out.append((cap, sig, r0, pairs, sp))
        return out

    def restore(self, cells, checksum):
        """Give each cell estimator what flash remembers; returns how many took it. The
        SOC part only for the same calibration (another one may be another pack), its
        sigmas grown for the time off (BOOT_OFF)."""
        self.soc_restored = 0
        doc = self.read()
        if doc is None:
            return 0
        parsed = self._parse(doc, cells)
        if parsed is None:
            return 0
        same_cal = doc.get("cal") == checksum
        grow = BOOT_OFF * BOOT_OFF + SOC_DELTA * SOC_DELTA
        for k, (cap, sig, r0, pairs, sp) in enumerate(parsed):
            c = cells[k]
            c.cap.reset(cap, sig)
            c.cap.pairs = pairs
            if same_cal and 0.3 < r0 < 5.0:
                c.r0_slow = r0
                c.rls.scale = r0
            if same_cal and sp is not None:
                h, hs = sp[2], sp[3]
                if h is not None:
                    hs = math.sqrt(hs * hs + H_DELTA * H_DELTA)
                    hs = hs if hs < hysteresis.SIGMA_UNKNOWN else hysteresis.SIGMA_UNKNOWN
                c.restore(sp[0], math.sqrt(sp[1] * sp[1] + grow), h, hs)
                self.soc_restored += 1
        self.saved = doc["cells"][:len(cells)]
        self.cal = doc.get("cal")
        return len(parsed)

    def tick(self, cells, dt_s, checksum):
        """Count running time; save the SOH every SAVE_S, the SOC part when it moved (see
        the top). Returns True if it wrote."""
        self.run_s += dt_s
        self.soc_s += dt_s
        if self.path is None or not cells:
            return False
        if self.run_s >= SAVE_S:
            self.save(cells, checksum)
            return True
        self.check_s += dt_s
        if self.check_s < SOC_CHECK_S or self.soc_s < SOC_MIN_S:
            return False
        self.check_s = 0.0
        if self._moved(cells, self.soc_s >= SOC_SAVE_S):
            self.save_soc(cells, checksum)
            return True
        return False

    def _moved(self, cells, periodic):
        """Whether a cell's SOC part moved past the event thresholds (SOC_DELTA, H_DELTA)
        since the last save, or, when periodic, past the quiet ones."""
        old = self.saved or []
        ds, dh = (SOC_QUIET, H_QUIET) if periodic else (SOC_DELTA, H_DELTA)
        for k, c in enumerate(cells):
            st = c.soc_state()
            if st is None or not st[0] == st[0]:
                continue
            o = old[k] if k < len(old) else None
            if not isinstance(o, dict) or "soc" not in o:
                return True      # never written: the first save after SOC_MIN_S
            if abs(st[0] - o["soc"]) > ds:
                return True
            if periodic and abs(st[1] - o["soc_sigma"]) > SIGMA_QUIET:
                return True
            if st[2] is not None and "h" in o and abs(st[2] - o["h"]) > dh:
                return True
        return False

    def save(self, cells, checksum):
        """Both parts; the SOH moved by at most its bound for the running time since the
        last SOH save."""
        days = self.run_s / 86400.0
        self.run_s = 0.0
        self._write(cells, checksum, days)

    def save_soc(self, cells, checksum):
        """The SOC part now; the SOH part as last written (no running time counted)."""
        self._write(cells, checksum, 0.0)
        self.soc_writes += 1

    def _write(self, cells, checksum, days):
        self.soc_s = 0.0
        self.check_s = 0.0
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
            e = {"cap_ah": float(cap), "cap_sigma_ah": float(sig), "r0": float(r0),
                 "pairs": c.cap.pairs}
            st = c.soc_state()
            if st is not None and not (st[0] == st[0] and st[1] == st[1]):
                st = None    # NaN: MicroPython's json could not read the file back
            if st is not None:
                e["soc"] = float(st[0])
                e["soc_sigma"] = float(st[1])
                if st[2] is not None:
                    e["h"] = float(st[2])
                    e["h_sigma"] = float(st[3])
            elif o is not None and "soc" in o and self.cal == checksum:
                # a cell not stepped since the boot (no valid voltage yet): what it had
                for key in ("soc", "soc_sigma", "h", "h_sigma"):
                    if key in o:
                        e[key] = o[key]
            out.append(e)
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
