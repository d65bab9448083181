"""The cells `bms-host synth` simulates: PyBaMM parameter sets, the installation's
thermal values, the ambient temperatures, and the parameter changes that age a cell.
PyBaMM is imported inside the functions that need it: importing it takes seconds, which
`bms-host synth --help` and a run served from the cache need not pay."""
from . import UserError

INSTALLATION = {
    "Total heat transfer coefficient [W.m-2.K-1]": 80.0,  # core to can
    "Casing heat capacity [J.K-1]": 5.0,
    "Environment thermal resistance [K.W-1]": 12.0,  # can to air
}
BASE_OPTIONS = {"thermal": "lumped", "surface temperature": "lumped"}
# Prada2013 lacks the values a thermal model needs; these come from Chen2020.
CHEN2020_FILL = [
    "Negative current collector thickness [m]", "Positive current collector thickness [m]",
    "Negative current collector conductivity [S.m-1]",
    "Positive current collector conductivity [S.m-1]",
    "Negative current collector density [kg.m-3]", "Positive current collector density [kg.m-3]",
    "Negative electrode density [kg.m-3]", "Positive electrode density [kg.m-3]",
    "Separator density [kg.m-3]",
    "Negative current collector specific heat capacity [J.kg-1.K-1]",
    "Positive current collector specific heat capacity [J.kg-1.K-1]",
    "Negative electrode specific heat capacity [J.kg-1.K-1]",
    "Positive electrode specific heat capacity [J.kg-1.K-1]",
    "Separator specific heat capacity [J.kg-1.K-1]",
]

CELLS = {
    "lgm50": {"parameter_set": "OKane2022", "nominal_ah": 5.0, "v_min": 2.5, "v_max": 4.2,
              "v_nom": 3.63, "fill_from": None, "extra": {},
              "description": "LG M50 21700, 5 Ah NMC811 / graphite-SiOx"},
    "lfp": {"parameter_set": "Prada2013", "nominal_ah": 2.3, "v_min": 2.0, "v_max": 3.6,
            "v_nom": 3.3, "fill_from": "Chen2020",
            "extra": {"Cell volume [m3]": 3.45e-5, "Cell cooling surface area [m2]": 0.00637},
            "hysteresis": "lfp",
            "description": "A123 26650, 2.3 Ah LFP / graphite"},
}
# LFP voltage hysteresis: PyBaMM's one-state model (Axen 2022) on the positive electrode.
# A rested A123 cell sits ~10 mV below the mean curve after a discharge and ~10 mV above
# after a charge (a ~20 mV pOCV gap on the plateau), so the two branches are Prada2013's OCP
# -/+ half_gap_v (lithiation = discharge branch below, delithiation = charge branch above).
# The half-gap tapers to 0 at the ends of the cell's stoichiometry window
# (tanh((d / taper_sto)^2), d the distance from a window end; 97 % of it 1.5 * taper_sto =
# 4 % of SOC in), so a rested full or empty cell still sits on its cut-off, as
# set_initial_state (equilibrium OCP) assumes. PyBaMM's state h (-1 discharge branch, +1
# charge branch) follows dh/dsto = decay * (1 -/+ h) / 2 per unit of positive stoichiometry
# moved; the window is 0.70 of it, so decay 120 would switch branch halfway after 1.7 % of
# SOC and 95 % after 7 % in a uniform electrode; the DFN (C/5 charge after a discharge to
# 50 %) takes 1.8 % and 8.5 %: measured cells switch over a few % of SOC.
HYSTERESIS = {"lfp": {"electrode": "positive", "half_gap_v": 0.010, "taper_sto": 0.02,
                      "decay": 120.0}}
DEFAULT_AMBIENTS = (-10.0, 0.0, 25.0, 45.0)
FULL_MARGIN_V = 0.001
QUICK_VAR_PTS = {"x_n": 5, "x_s": 3, "x_p": 5, "r_n": 6, "r_p": 6}


def cell_spec(cell, aged=None, quick=False):
    """Everything about the cell that changes simulation results (hashed into cache keys)."""
    c = dict(CELLS[cell])
    spec = {"cell": cell, "parameter_set": c["parameter_set"], "options": dict(BASE_OPTIONS),
            "installation": dict(INSTALLATION), "fill_from": c["fill_from"],
            "fill": list(CHEN2020_FILL) if c["fill_from"] else [], "extra": c["extra"],
            "v_min": c["v_min"], "v_max": c["v_max"], "nominal_ah": c["nominal_ah"],
            "var_pts": QUICK_VAR_PTS if quick else None, "aged": aged}
    if aged:
        spec["options"].update(aged["options"])
    if c.get("hysteresis"):
        spec["options"]["open-circuit potential"] = ("single", "one-state hysteresis")
        spec["hysteresis"] = dict(HYSTERESIS[c["hysteresis"]])
    return spec


def initial_hysteresis_state(init_soc):
    """The branch an experiment starts on: a full cell was just charged (+1, charge branch);
    any other start, empty or mid-SOC, comes after a discharge (-1)."""
    return 1.0 if init_soc >= 1.0 else -1.0


def add_hysteresis(p, hyst, init_soc):
    """Give the positive electrode lithiation/delithiation OCPs around its OCP (see
    HYSTERESIS), the decay rates and the initial state, in ParameterValues p."""
    import pybamm
    _, _, y_full, y_empty = pybamm.lithium_ion.get_min_max_stoichiometries(p)
    u_mid, half, w = p["Positive electrode OCP [V]"], hyst["half_gap_v"], hyst["taper_sto"]

    def gap(sto):
        return half * pybamm.tanh(((sto - y_full) / w) ** 2) * \
            pybamm.tanh(((y_empty - sto) / w) ** 2)

    p.update({
        "Positive electrode lithiation OCP [V]": lambda sto: u_mid(sto) - gap(sto),
        "Positive electrode delithiation OCP [V]": lambda sto: u_mid(sto) + gap(sto),
        "Positive particle lithiation hysteresis decay rate": hyst["decay"],
        "Positive particle delithiation hysteresis decay rate": hyst["decay"],
        "Initial hysteresis state in positive electrode": initial_hysteresis_state(init_soc),
    }, check_already_exists=False)


def make_parameters(spec, ambient_c, init_soc):
    import pybamm
    p = pybamm.ParameterValues(spec["parameter_set"])
    if spec["fill_from"]:
        src = pybamm.ParameterValues(spec["fill_from"])
        p.update({k: src[k] for k in spec["fill"]}, check_already_exists=False)
    p.update(spec["extra"], check_already_exists=False)
    p.update(spec["installation"], check_already_exists=False)
    if spec.get("aged"):
        p.update(spec["aged"]["parameters"], check_already_exists=False)
    if spec.get("modes"):
        apply_ageing_modes(p, spec["modes"])
    tk = 273.15 + float(ambient_c)
    p.update({"Ambient temperature [K]": tk, "Initial temperature [K]": tk})
    if spec.get("hysteresis"):
        add_hysteresis(p, spec["hysteresis"], init_soc)
    p.set_initial_state(float(init_soc))
    if init_soc >= 1.0:
        # a rested full cell sits exactly on the upper cut-off, which PyBaMM refuses as an
        # initial state: the upper limit event is moved up by FULL_MARGIN_V.
        p.update({"Upper voltage cut-off [V]": spec["v_max"] + FULL_MARGIN_V})
    return p


# --------------------------------------------------------------------------- command

def _parse_ambients(text, quick):
    if text is None:
        return [25.0] if quick else list(DEFAULT_AMBIENTS)
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            "--ambients must be comma-separated numbers in degC, e.g. -10,0,25,45") from None
    if not vals or any(v < -30 or v > 60 for v in vals):
        raise UserError("--ambients must lie between -30 and 60 degC")
    return vals


# ------------------------------------------------------------------ ageing modes

# Ageing as parameter changes on OKane2022 (no cycling to get there), three modes:
#   area: loss of active material in both electrodes together with the lithium it holds
#         (particles isolated while lithiated, a delaminated or dried-out part of the
#         jelly roll: Birkl et al. 2017's LAM_li modes on both sides). The cell behaves as
#         a smaller one: capacity and electrode area fall by the same fraction, so every
#         resistance grows as 1 / (1 - area). Modelled as a narrower electrode.
#   lli:  loss of lithium inventory to SEI growth on the negative electrode: the cyclable
#         lithium (both electrodes' initial lithium) falls by this fraction. This one
#         moves the electrodes' stoichiometry windows against each other and bends the
#         OCV-SOC curve: 3 % already shifts the mid-SOC OCV by ~17 mV (seen here), which
#         a fresh OCV table reads as ~2 % SOC; pure LLI of 5 % shifts it by up to 35 mV.
#   sei:  the film that LLI leaves on the negative particles as a series resistance:
#         the SEI made from the lost lithium (2 Li per SEI molecule, OKane2022's partial
#         molar volume) spread over the negative particles' surface gives its thickness,
#         and OKane2022's SEI resistivity over that surface its resistance (the model's
#         "contact resistance" option carries it).
FARADAY = 96485.33212
_LI_KEYS = (("Negative", "negative"), ("Positive", "positive"))


def _cyclable_lithium_mol(p, area_m2):
    tot = 0.0
    for side, low in _LI_KEYS:
        tot += (p["Initial concentration in %s electrode [mol.m-3]" % low]
                * p["%s electrode active material volume fraction" % side]
                * p["%s electrode thickness [m]" % side] * area_m2)
    return tot


def apply_ageing_modes(p, modes):
    """Apply the ageing modes above (their sizes: synth_use.AGE_LEVELS) to ParameterValues p
    in place, before its initial state is set (set_initial_state spreads the remaining
    lithium)."""
    p.update({"Electrode width [m]": p["Electrode width [m]"] * (1.0 - modes["area"])})
    area = p["Electrode height [m]"] * p["Electrode width [m]"]
    lost = _cyclable_lithium_mol(p, area) * modes["lli"]   # a fraction of what is left
    # taken from the negative electrode's initial lithium (set_initial_state then
    # spreads what remains over both electrodes for the wanted SOC)
    eps_l = (p["Negative electrode active material volume fraction"]
             * p["Negative electrode thickness [m]"] * area)
    c_n = p["Initial concentration in negative electrode [mol.m-3]"]
    p.update({"Initial concentration in negative electrode [mol.m-3]": c_n - lost / eps_l})
    # SEI film: thickness = (lost Li / 2) * molar volume / particle surface
    a_n = 3.0 * p["Negative electrode active material volume fraction"] / \
        p["Negative particle radius [m]"]
    surface = a_n * p["Negative electrode thickness [m]"] * area
    thick = 0.5 * lost * p["SEI partial molar volume [m3.mol-1]"] / surface
    r_sei = p["SEI resistivity [Ohm.m]"] * thick / surface
    p.update({"Contact resistance [Ohm]": r_sei}, check_already_exists=False)
    return {"sei_thickness_m": thick, "sei_resistance_ohm": r_sei,
            "lithium_lost_mol": lost}

