"""Reading trace CSVs: `time_s,current_a,voltage_v,temperature_c[,ambient_c,...]`.

Current is positive on discharge and piecewise constant: the current of row k applies over
(t_{k-1}, t_k]. Extra columns are carried along. Every error a person can cause (missing
file, missing column, a non-number, time that does not increase) is one UserError sentence
naming the file and the line. A last line cut short without its line end (a logger that lost
power mid-write) is dropped with a warning on stderr.
"""
import math
import os
import sys

import numpy as np

from . import UserError

REQUIRED = ("time_s", "current_a", "voltage_v", "temperature_c")


def _bad_line(lines, first, path, names, keep=None):
    """Find the first line that does not parse: len(names) values, the columns in keep
    (all when None) finite numbers."""
    for n, text in enumerate(lines[first:], start=first + 1):
        if not text.strip():
            raise UserError("trace %s line %d is empty; remove it or fill in the values"
                            % (path, n))
        cells = text.split(",")
        if len(cells) != len(names):
            raise UserError("trace %s line %d has %d values but the header names %d columns"
                            % (path, n, len(cells), len(names)))
        for name, c in zip(names, cells, strict=True):
            if keep is not None and name not in keep:
                continue
            try:
                x = float(c)
            except ValueError:
                raise UserError("trace %s line %d: %s value '%s' is not a number"
                                % (path, n, name, c.strip()[:20])) from None
            if not math.isfinite(x):
                raise UserError("trace %s line %d: %s value '%s' is not finite"
                                % (path, n, name, c.strip()[:20]))
    return None


def _parses(text, n, idx):
    cells = text.split(",")
    if len(cells) != n:
        return False
    try:
        return all(math.isfinite(float(cells[k])) for k in idx)
    except ValueError:
        return False


def read_trace(path, required=REQUIRED, min_rows=1, only=None):
    """Read a trace CSV into a dict of float64 numpy columns (all columns, extra ones too;
    with `only`, the required columns and those of `only` the file has, the others
    checked for their count and otherwise ignored, so they may hold text).

    Raises UserError (one sentence) for a missing file, fewer than min_rows data rows,
    missing required columns, non-numeric or non-finite values (with the line number) or
    non-increasing time."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError("trace file %s does not exist" % path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise UserError("trace %s is not a text CSV file (it holds binary data)" % path) from None
    except OSError as e:
        raise UserError("cannot read trace %s (%s)" % (path, e.strerror or e)) from None
    if "\x00" in text:
        raise UserError("trace %s is not a text CSV file (it holds binary data)" % path)
    torn = bool(text) and not text.endswith(("\n", "\r"))
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UserError("trace %s is empty; it needs a header line and at least one row" % path)
    names = [h.strip() for h in lines[0].split(",")]
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError("trace %s has no column %s (the header needs %s)"
                        % (path, ", ".join(missing), ",".join(required)))
    if len(set(names)) != len(names):
        raise UserError("trace %s names a column twice in its header" % path)
    keep = None
    idx = range(len(names))
    if only is not None:
        keep = set(required) | set(only)
        idx = [k for k, n in enumerate(names) if n in keep]
    if torn and len(lines) > 1 and not _parses(lines[-1], len(names), idx):
        print("warning: trace %s line %d is cut short (a logger that lost power?); dropped it"
              % (path, len(lines)), file=sys.stderr)
        lines.pop()
    if len(lines) < 2:
        raise UserError("trace %s has a header but no data rows" % path)
    if len(lines) - 1 < min_rows:
        raise UserError("trace %s has %d data row%s; it needs at least %d"
                        % (path, len(lines) - 1, "" if len(lines) == 2 else "s", min_rows))
    try:
        rows = [ln.split(",") for ln in lines[1:]]
        if keep is not None:
            if any(len(r) != len(names) for r in rows):
                raise ValueError("column count")
            rows = [[r[k] for k in idx] for r in rows]
        data = np.array(rows, dtype=float)
        ok = data.ndim == 2 and data.shape[1] == len(idx)
    except ValueError:
        ok = False
    if not ok:
        _bad_line(lines, 1, path, names, keep)
        raise UserError("trace %s could not be parsed as comma-separated numbers" % path)
    picked = [names[k] for k in idx]
    fin = np.isfinite(data)
    if not fin.all():
        r, c = np.argwhere(~fin)[0]
        raise UserError("trace %s line %d: %s value is not finite" % (path, r + 2, picked[c]))
    cols = {n: np.ascontiguousarray(data[:, k]) for k, n in enumerate(picked)}
    t = cols.get("time_s")
    if t is not None and len(t) > 1:
        bad = np.nonzero(np.diff(t) <= 0.0)[0]
        if len(bad):
            raise UserError("trace %s line %d: time_s does not increase (%g after %g)"
                            % (path, bad[0] + 3, t[bad[0] + 1], t[bad[0]]))
    return cols


def guard_output(out, *inputs):
    """Refuse an output path that names one of the inputs, however spelt (relative or
    absolute, through a symlink or a hard link): writing it would destroy the input."""
    out = str(out)
    for src in inputs:
        if src is None:
            continue
        src = str(src)
        same = os.path.realpath(out) == os.path.realpath(src)
        if not same and os.path.exists(out) and os.path.exists(src):
            same = os.path.samefile(out, src)
        if same:
            raise UserError("--out %s is the input file %s; writing it would destroy the "
                            "input: choose another output file" % (out, src))
    if os.path.isdir(out):
        raise UserError("--out %s is a folder; give a file name" % out)


def temp_beside(path):
    """A fresh temporary file name in the folder of `path` (so the final rename stays on
    one filesystem) that no other run shares."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(str(path)))
    if not os.path.isdir(folder):
        raise UserError("cannot write %s: folder %s does not exist" % (path, folder))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(str(path)) + ".",
                               suffix=".part", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary file
    return tmp


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_columns(path, columns, fmt=None):
    """Write a dict of equal-length columns as CSV, atomically (temp file, then rename);
    nothing is left behind when writing fails or is interrupted."""
    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=float) for n in names])
    tmp = temp_beside(path)
    try:
        np.savetxt(tmp, data, delimiter=",", header=",".join(names), comments="",
                   fmt=fmt or "%.6f")
        os.replace(tmp, path)
    except OSError as e:
        remove_quietly(tmp)
        raise UserError("cannot write %s (%s)" % (path, e.strerror or e)) from None
    except BaseException:
        remove_quietly(tmp)
        raise
