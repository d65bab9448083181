"""Reading trace CSVs: `time_s,current_a,voltage_v,temperature_c[,ambient_c,...]`.

Current is positive on discharge and piecewise constant: the current of row k applies over
(t_{k-1}, t_k]. Extra columns are carried along. Every error a person can cause (missing
file, missing column, a non-number, time that does not increase) is one UserError sentence
naming the file and the line.
"""
import os

from . import UserError

REQUIRED = ("time_s", "current_a", "voltage_v", "temperature_c")


def _bad_line(lines, first, path, names):
    """Find the first line that does not parse as len(names) finite numbers."""
    import math
    for n, text in enumerate(lines[first:], start=first + 1):
        if not text.strip():
            raise UserError("trace %s line %d is empty; remove it or fill in the values"
                            % (path, n))
        cells = text.split(",")
        if len(cells) != len(names):
            raise UserError("trace %s line %d has %d values but the header names %d columns"
                            % (path, n, len(cells), len(names)))
        for name, c in zip(names, cells, strict=True):
            try:
                x = float(c)
            except ValueError:
                raise UserError("trace %s line %d: %s value '%s' is not a number"
                                % (path, n, name, c.strip()[:20])) from None
            if not math.isfinite(x):
                raise UserError("trace %s line %d: %s value '%s' is not finite"
                                % (path, n, name, c.strip()[:20]))
    return None


def read_trace(path, required=REQUIRED):
    """Read a trace CSV into a dict of float64 numpy columns (all columns, extra ones too).

    Raises UserError (one sentence) for a missing file, missing required columns,
    non-numeric or non-finite values (with the line number) or non-increasing time."""
    import numpy as np

    path = str(path)
    if not os.path.isfile(path):
        raise UserError("trace file %s does not exist" % path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("cannot read trace %s (%s)" % (path, e.__class__.__name__)) from None
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
    if len(lines) < 2:
        raise UserError("trace %s has a header but no data rows" % path)
    try:
        data = np.array([ln.split(",") for ln in lines[1:]], dtype=float)
        ok = data.ndim == 2 and data.shape[1] == len(names)
    except ValueError:
        ok = False
    if not ok:
        _bad_line(lines, 1, path, names)
        raise UserError("trace %s could not be parsed as comma-separated numbers" % path)
    fin = np.isfinite(data)
    if not fin.all():
        r, c = np.argwhere(~fin)[0]
        raise UserError("trace %s line %d: %s value is not finite" % (path, r + 2, names[c]))
    cols = {n: np.ascontiguousarray(data[:, k]) for k, n in enumerate(names)}
    t = cols.get("time_s")
    if t is not None and len(t) > 1:
        bad = np.nonzero(np.diff(t) <= 0.0)[0]
        if len(bad):
            raise UserError("trace %s line %d: time_s does not increase (%g after %g)"
                            % (path, bad[0] + 3, t[bad[0] + 1], t[bad[0]]))
    return cols


def write_columns(path, columns, fmt=None):
    """Write a dict of equal-length columns as CSV, atomically (temp file, then rename)."""
    import numpy as np

    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=float) for n in names])
    tmp = str(path) + ".part"
    try:
        np.savetxt(tmp, data, delimiter=",", header=",".join(names), comments="",
                   fmt=fmt or "%.6f")
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise UserError("cannot write %s (%s)" % (path, e.strerror or e)) from None
