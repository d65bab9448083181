# Passive balancing: bleed the highest cells (by SOC when given, else by voltage) while
# charging or at rest. Start/stop hysteresis keeps bleeders from chattering; a cap on
# simultaneous bleeders bounds the heat on the board.

DEFAULTS = {
    "start_delta_v": 0.015,     # bleed a cell this far above the lowest cell ...
    "stop_delta_v": 0.005,      # ... until it is within this
    "start_delta_soc": 0.02,
    "stop_delta_soc": 0.005,
    "min_cell_v": 3.4,          # no balancing while any cell is below this
    "max_bleeders": 4,
    "rest_current_a": 0.1,      # |current| below this counts as rest
}


class Balancer:
    """update() once per slow tick; returns the bleeder bitmask (bit k = cell k)."""

    def __init__(self, n_cells, config=None):
        cfg = dict(DEFAULTS)
        if config:
            for k in config:
                if k not in DEFAULTS:
                    raise ValueError("balancing: unknown config key '%s'" % k)
                cfg[k] = config[k]
        if cfg["stop_delta_v"] > cfg["start_delta_v"] or \
                cfg["stop_delta_soc"] > cfg["start_delta_soc"]:
            raise ValueError("balancing: a stop delta must not exceed its start delta")
        if cfg["max_bleeders"] < 0:
            raise ValueError("balancing: max_bleeders must not be negative")
        self.cfg = cfg
        self.n_cells = n_cells
        self.bleed = bytearray(n_cells)   # 1 where the bleeder is on
        self.mask = 0
        self.reason = "idle"

    def _off(self, reason):
        for k in range(self.n_cells):
            self.bleed[k] = 0
        self.mask = 0
        self.reason = reason
        return 0

    def update(self, cell_v, current_a, fault_active, soc=None, cell_st=None):
        """cell_v: per-cell volts; current_a: pack current (positive on discharge);
        fault_active: truthy (True, a non-empty set) when protection has any active fault;
        soc: optional per-cell SOC 0..1; cell_st: optional per-cell sensor status
        (sensors.Sample.cell_st, 0 = OK)."""
        cfg = self.cfg
        n = self.n_cells
        if fault_active:
            return self._off("fault active")
        if current_a != current_a or current_a > cfg["rest_current_a"]:
            return self._off("discharging")
        vmin = cell_v[0]
        for k in range(n):
            v = cell_v[k]
            if v != v or (cell_st is not None and cell_st[k]):
                return self._off("a cell reading is invalid")
            if v < vmin:
                vmin = v
        if vmin < cfg["min_cell_v"]:
            return self._off("a cell is below min_cell_v")
        x = soc if soc is not None else cell_v
        if soc is not None:
            start, stop = cfg["start_delta_soc"], cfg["stop_delta_soc"]
        else:
            start, stop = cfg["start_delta_v"], cfg["stop_delta_v"]
        ref = x[0]
        for k in range(n):
            if x[k] < ref:
                ref = x[k]
        # candidates: running cells above stop, idle ones above start
        bleed = self.bleed
        for k in range(n):
            d = x[k] - ref
            bleed[k] = 2 if d > (stop if bleed[k] else start) else 0
        # keep the largest deltas up to the cap
        mask = 0
        for _ in range(cfg["max_bleeders"]):
            best = -1
            for k in range(n):
                if bleed[k] == 2 and (best < 0 or x[k] > x[best]):
                    best = k
            if best < 0:
                break
            bleed[best] = 1
            mask |= 1 << best
        for k in range(n):
            if bleed[k] == 2:
                bleed[k] = 0
        self.mask = mask
        self.reason = "balancing" if mask else "balanced"
        return mask
