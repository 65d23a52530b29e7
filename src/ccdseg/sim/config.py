"""Simulation configuration: dataclasses with sourced defaults, presets, TOML files and overrides.

Every quantity is physical (electrons, eV, µm, seconds) except the two numbers that turn
electrons into ADU at the output: ``gain_adu_per_e`` and ``pedestal_adu``. Ranges are
``(low, high)`` pairs from which each image draws a value. Sources: docs/physics.md of the repository.
"""

import dataclasses
from dataclasses import dataclass, field

from ccdseg.errors import ConfigError
from ccdseg.settings import (
    INTEGER_RANGE,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_LOW,
    at_least,
    check_rules,
    coerce,
    interval,
    parse_overrides,
    read_toml,
    value_range,
)


@dataclass
class DetectorConfig:
    """The CCD and its readout."""

    height: int = 256                     #: rows (px)
    width: int = 256                      #: columns (px)
    pixel_size_um: float = 15.0           #: pixel pitch (µm), DAMIC
    thickness_um: float = 675.0           #: fully depleted thickness (µm), DAMIC
    gain_adu_per_e: float = 10.0          #: ADU per electron (Leach electronics ≈ 10)
    pedestal_adu: float = 9000.0          #: baseline of an empty pixel (ADU)
    pedestal_drift_adu: float = 0.0       #: step of the row-to-row random walk of the pedestal (ADU)
    read_noise_e: float = 2.0             #: single-sample readout noise σ₁ (e-)
    n_samples: int = 1                    #: skipper samples averaged; noise is σ₁/√N
    dark_current_e_per_day: float = 1e-3  #: e-/pix/day, DAMIC-M sim default
    dark_charge_e: tuple = (0.0, 0.0)     #: extra dark charge of the image (e-/pix), drawn per image: warm CCDs
    spurious_charge_e: float = 1.5e-4     #: clock-induced charge (e-/pix)
    exposure_s: float = 8 * 3600.0        #: exposure before readout starts (s)
    row_readout_s: float = 0.0            #: time to read one row (s): later rows collect more dark charge
    full_well_e: float = 50000.0          #: charge a pixel holds before it bleeds along the column (e-)
    adc_max_adu: float | None = 65535.0   #: ADC saturation (ADU); None for averaged float images
    cti: float = 0.0                      #: charge transfer inefficiency per transfer
    prescan_columns: int = 0              #: leading columns read before the pixel array (noise only)
    overscan_columns: int = 0             #: trailing columns read after the pixel array (noise only)
    # fidelity to measured frames (issue 15); the defaults leave the images of older configs unchanged
    dark_column_ramp_e: float = 0.0       #: extra dark charge of the last column over the first (e-/pix), linear
    first_column_offset_e: float = 0.0    #: readout offset of column 0, the first read after the prescan (e-)
    gain_spread: float = 0.0              #: relative standard deviation of the gain from frame to frame
    rice_q: float = 0.0                   #: fpack RICE quantisation: step = row noise / q, dithered; 0 = none

    @property
    def noise_e(self):
        """Effective readout noise of one pixel (e-): σ₁/√N."""
        return self.read_noise_e / self.n_samples ** 0.5


@dataclass
class GlowConfig:
    """Amplifier and edge glow: extra Poisson charge falling off away from the readout."""

    probability: float = 0.6                      #: share of images with glow
    shapes: tuple = ("corner", "edge")            #: drawn at random: corner, edge or band
    amplitude_e: tuple = (4.0, 400.0)             #: excess at the readout corner/edge (e-/pix), log-uniform
    length_px: tuple = (4.0, 60.0)                #: e-folding distance of the excess (px)
    band_columns: tuple = (8, 40)                 #: width of a constant band of columns (px), shape "band"
    warm_columns: tuple = (0, 2)                  #: warm columns at the readout edge (count)


@dataclass
class HotPixelConfig:
    """Defects adding charge at fixed positions."""

    pixels_per_mpix: tuple = (20.0, 200.0)        #: single hot pixels per megapixel
    columns: tuple = (0, 3)                       #: hot columns per image
    rows: tuple = (0, 1)                          #: hot rows per image
    streaks_per_mpix: tuple = (0.0, 30.0)         #: serial-register-like one-row streaks per megapixel
    streak_length_px: tuple = (3, 40)             #: streak length (px)
    partial_fraction: float = 0.5                 #: share of hot columns/rows that cover only part of the line
    amplitude_e: tuple = (6.0, 50000.0)           #: mean excess charge (e-/pix), log-uniform


@dataclass
class ClusterConfig:
    """Ionisation events (counts per megapixel, drawn uniformly in the ranges)."""

    points_per_mpix: tuple = (100.0, 1000.0)      #: diffusion-limited point deposits
    worms_per_mpix: tuple = (5.0, 60.0)           #: electrons above ~100 keV
    muons_per_mpix: tuple = (0.0, 15.0)           #: straight tracks through the full thickness
    alphas_per_mpix: tuple = (0.0, 1.0)           #: ~5 MeV blobs that saturate and bleed
    point_energy_ev: tuple = (50.0, 20000.0)      #: continuum of point deposits (eV), log-uniform
    xray_fraction: float = 0.2                    #: share of points at an X-ray line
    xray_lines_ev: tuple = (1740.0, 5900.0, 8046.0, 8904.0)  #: Si Kα, ⁵⁵Fe, Cu Kα, Cu Kβ
    worm_energy_ev: tuple = (1e5, 1e6)            #: electron energy (eV), log-uniform
    muon_e_per_um: float = 100.0                  #: ionisation of a minimum-ionising muon (e-/µm)
    alpha_energy_ev: tuple = (4e6, 6e6)           #: alpha energy (eV)
    alpha_sigma_px: tuple = (0.5, 1.5)            #: lateral size of the alpha charge cloud (px)
    ev_per_pair: float = 3.77                     #: mean energy per electron-hole pair (eV)
    fano: float = 0.13                            #: Fano factor
    diffusion_a_um2: float = 216.2                #: A of σ²(z) = -A ln(1 - b z) (µm²), DAMIC
    diffusion_b_per_um: float = 8.86e-4           #: b of the diffusion law (1/µm), DAMIC
    max_packets: int = 128                        #: diffusion samples per step at most: bigger steps move in packets
    fe55_per_mpix: tuple = (0.0, 0.0)             #: ⁵⁵Fe X-rays entering from the back (per megapixel)
    fe55_lines_ev: tuple = (5898.8, 6490.5)       #: Mn Kα, Kβ (eV)
    fe55_kbeta_fraction: float = 0.12             #: share of Kβ among the ⁵⁵Fe X-rays


@dataclass
class LabelConfig:
    """Which pixels get which label; decided from the simulation's own components.

    A pixel is *cluster* if the charge deposited there by ionisation events (after diffusion
    and bleeding) is at least ``max(cluster_min_e, cluster_min_sigma * noise)``; *hot pixel*
    if it lies on a defect; *glowing* if the expected glow excess is at least
    ``max(glow_min_e, glow_min_sigma * noise)``. ``noise`` is the pixel's own: readout noise
    and the shot noise of its expected dark charge, ``sqrt(noise_e**2 + dark)``, so that
    charge hidden in a high dark current is not asked of the network. Overlaps: cluster >
    hot pixel > glowing > background, so an event on a hot column is still found.
    """

    cluster_min_e: float = 1.0
    cluster_min_sigma: float = 1.0
    glow_min_e: float = 0.2
    glow_min_sigma: float = 1.0


@dataclass
class ReadoutConfig:
    """What real readouts add (all off by default): several amplifiers, baselines, odd columns, compression.

    Electronic effects (baseline, transient, pedestals) move the zero and leave the labels alone; dead and
    negative columns lose their charge (background); saturated columns are defects (hot pixel).
    Charges are in e-, turned into ADU with each amplifier's gain.
    """

    amplifier_cols: int = 1                       #: amplifiers along the row; each reads its own part
    amplifier_rows: int = 1                       #: ... and along the column (the readout corner faces out)
    pedestal_offset_adu: tuple = (-500.0, 500.0)  #: pedestal of each amplifier relative to the first (ADU)
    noise_spread: float = 0.2                     #: relative spread of the amplifiers' readout noise
    gain_spread: float = 0.05                     #: relative spread of the amplifiers' gains
    sawtooth_e: tuple = (0.0, 0.0)                #: baseline saw-tooth: jump at each tooth (e-, same in every row)
    sawtooth_period_px: tuple = (150, 350)        #: columns between the jumps of the saw-tooth
    sawtooth_decay_px: tuple = (20.0, 80.0)       #: e-folding length of the decay after each jump (px)
    baseline_jumps: tuple = (0, 0)                #: lasting baseline steps along the row (count)
    jump_e: tuple = (1.0, 5.0)                    #: size of a step (e-, either sign)
    prescan_transient_e: tuple = (0.0, 0.0)       #: offset of the first column read, decaying (e-)
    prescan_transient_px: float = 4.0             #: e-folding length of the transient (px)
    dead_columns: tuple = (0, 0)                  #: columns that read no charge (count)
    negative_columns: tuple = (0, 0)              #: columns that read below the pedestal (count)
    negative_e: tuple = (3.0, 30.0)               #: charge deficit of a negative column (e-)
    saturated_columns: tuple = (0, 0)             #: full-height columns at the ADC limit or full well (count)

    @property
    def enabled(self):
        """Whether any effect is switched on."""
        return (self.amplifier_cols * self.amplifier_rows > 1 or self.sawtooth_e[1] > 0 or self.baseline_jumps[1] > 0
                or self.prescan_transient_e[1] > 0 or self.dead_columns[1] > 0 or self.negative_columns[1] > 0
                or self.saturated_columns[1] > 0)


@dataclass
class SimConfig:
    """Everything the simulator needs for one image."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    glow: GlowConfig = field(default_factory=GlowConfig)
    hot: HotPixelConfig = field(default_factory=HotPixelConfig)
    clusters: ClusterConfig = field(default_factory=ClusterConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)

    def to_dict(self):
        """Plain nested dict (tuples as lists), e.g. for a model file or a FITS header."""
        return dataclasses.asdict(self)


#: Changes from the defaults (a conventional-readout DAMIC CCD) that make each preset.
PRESETS = {
    "damic": {},
    "skipper": {
        "detector": {"gain_adu_per_e": 1.3, "pedestal_adu": -40.0, "pedestal_drift_adu": 0.02,
                     "read_noise_e": 2.7, "n_samples": 500, "exposure_s": 3600.0,
                     "dark_current_e_per_day": 0.5, "row_readout_s": 20.0, "adc_max_adu": None},
        "glow": {"amplitude_e": (0.3, 40.0), "length_px": (3.0, 40.0)},
        "hot": {"amplitude_e": (1.5, 50000.0)},
        "clusters": {"point_energy_ev": (15.0, 20000.0)},
    },
    "thesis": {
        "detector": {"gain_adu_per_e": 1.0, "pedestal_adu": 8800.0, "read_noise_e": 12.0,
                     "dark_current_e_per_day": 0.0, "spurious_charge_e": 0.0},
        "glow": {"probability": 1.0, "shapes": ("band",), "amplitude_e": (1400.0, 1500.0),
                 "band_columns": (10, 40), "warm_columns": (0, 0)},
        "hot": {"amplitude_e": (2200.0, 2200.0), "pixels_per_mpix": (0.0, 50.0),
                "columns": (1, 3), "rows": (0, 2), "streaks_per_mpix": (0.0, 0.0)},
        "clusters": {"points_per_mpix": (100.0, 600.0), "muons_per_mpix": (0.0, 30.0)},
    },
}
# the bundled DAMIC-M module test (LSM, 2025), as measured by benchmarks/fidelity.py: the skipper readout with the
# header's timing (500 s exposure, 3770 s to read 320 rows) and 31 e-/pix/day, which give its dark level and row
# ramp; a column ramp and column 0 offset; no glow, no hot lines; an ⁵⁵Fe source on the back; diffusion fitted
# to the widths of its point-like clusters; per-frame gain spread and the file's RICE quantisation (q = 4)
PRESETS["damicm"] = {
    "detector": {**PRESETS["skipper"]["detector"], "gain_adu_per_e": 1.36, "gain_spread": 0.02,
                 "pedestal_drift_adu": 0.003, "read_noise_e": 3.13, "exposure_s": 500.0, "row_readout_s": 11.78,
                 "dark_current_e_per_day": 31.0, "dark_column_ramp_e": 0.07, "first_column_offset_e": 2.4,
                 "rice_q": 4.0},
    "glow": {"probability": 0.0},
    "hot": {"pixels_per_mpix": (0.0, 5.0), "columns": (0, 0), "rows": (0, 0), "streaks_per_mpix": (0.0, 10.0),
            "amplitude_e": (5.0, 100.0)},
    "clusters": {**PRESETS["skipper"]["clusters"], "points_per_mpix": (400.0, 600.0), "worms_per_mpix": (5.0, 20.0),
                 "muons_per_mpix": (0.0, 0.0), "alphas_per_mpix": (0.0, 0.0), "xray_fraction": 0.05,
                 "fe55_per_mpix": (450.0, 550.0), "max_packets": 16384,
                 "diffusion_a_um2": 530.0, "diffusion_b_per_um": 8.86e-4},
}

_SECTIONS = {f.name: f.type for f in dataclasses.fields(SimConfig)}
#: Tuple-valued keys of any length; every other tuple is a (low, high) range.
_LISTS = {"glow.shapes", "clusters.xray_lines_ev"}


def load_config(preset="damic", path=None, overrides=None):
    """Build and validate a :class:`SimConfig`.

    Parameters
    ----------
    preset : str
        ``"damic"`` (conventional readout, 2 e- noise, 10 ADU/e-), ``"skipper"``
        (DAMIC-M-like, 0.12 e- noise, single electrons resolved), ``"damicm"`` (the skipper
        readout of a warm CCD, as the bundled DAMIC-M module test: 0.5-3 e-/pix of dark
        charge rising with row) or ``"thesis"`` (the 2020
        thesis recipe: 8800 ADU pedestal, glow band +1400-1500 ADU, hot lines +2200 ADU).
    path : str or Path, optional
        TOML file whose tables ``[detector]``, ``[glow]``, ``[hot]``, ``[clusters]``,
        ``[labels]`` override the preset; a top-level ``preset = "..."`` key chooses it.
    overrides : dict or list of str, optional
        Last word: ``{"detector.read_noise_e": 0.2}`` or ``["detector.read_noise_e=0.2"]``.

    Raises
    ------
    ConfigError
        Unknown preset, section or key, wrong type, or a value out of range; the message
        names the parameter.
    """
    changes = {}
    if path is not None:
        changes = read_toml(path)
        preset = changes.pop("preset", preset)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    config = SimConfig()
    for source in (PRESETS[preset], changes, _parse_overrides(overrides)):
        _apply(config, source)
    validate(config)
    return config


def _parse_overrides(overrides):
    nested = {}
    for key, value in parse_overrides(overrides):
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"override {key!r} must name section.key, e.g. detector.read_noise_e")
        nested.setdefault(section, {})[name] = value
    return nested


def _apply(config, changes):
    for section, values in changes.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section {section!r}: choose from {', '.join(_SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a table of key = value")
        target = getattr(config, section)
        known = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {section}.{key}")
            name = f"{section}.{key}"
            setattr(target, key, coerce(name, known[key].type, value, like=getattr(target, key),
                                        any_length=name in _LISTS))


#: What each value must be, checked in this order (the first bad one is reported).
_RULES = (
    ("detector.height detector.width detector.n_samples", at_least(1)),
    ("detector.pixel_size_um detector.thickness_um detector.gain_adu_per_e detector.full_well_e", POSITIVE),
    ("detector.read_noise_e detector.dark_current_e_per_day detector.spurious_charge_e detector.exposure_s "
     "detector.row_readout_s detector.pedestal_drift_adu detector.prescan_columns detector.overscan_columns",
     NON_NEGATIVE),
    ("detector.dark_charge_e", value_range()),
    ("detector.cti", interval("[0, 1)")),
    ("glow.probability hot.partial_fraction clusters.xray_fraction", interval("[0, 1]")),
    ("glow.shapes", (lambda shapes: len(shapes) > 0 and set(shapes) <= {"corner", "edge", "band"},
                     "a non-empty list of 'corner', 'edge', 'band'")),
    ("glow.length_px hot.amplitude_e clusters.point_energy_ev clusters.worm_energy_ev clusters.alpha_energy_ev "
     "clusters.alpha_sigma_px", POSITIVE_LOW),
    ("glow.amplitude_e glow.length_px glow.band_columns glow.warm_columns hot.pixels_per_mpix hot.streaks_per_mpix "
     "hot.columns hot.rows hot.amplitude_e clusters.points_per_mpix clusters.worms_per_mpix clusters.muons_per_mpix "
     "clusters.alphas_per_mpix clusters.point_energy_ev clusters.worm_energy_ev clusters.alpha_energy_ev "
     "clusters.alpha_sigma_px", value_range()),
    ("hot.streak_length_px", value_range(low=1)),
    ("glow.band_columns glow.warm_columns hot.columns hot.rows hot.streak_length_px", INTEGER_RANGE),
    ("clusters.xray_lines_ev", (lambda energies: all(e > 0 for e in energies), "positive energies")),
    ("clusters.muon_e_per_um clusters.ev_per_pair clusters.diffusion_a_um2 clusters.diffusion_b_per_um", POSITIVE),
    ("clusters.fano labels.cluster_min_e labels.cluster_min_sigma labels.glow_min_e labels.glow_min_sigma "
     "detector.gain_spread detector.rice_q", NON_NEGATIVE),
    ("clusters.max_packets", at_least(1)),
    ("clusters.fe55_per_mpix", value_range()),
    ("clusters.fe55_lines_ev", (lambda energies: all(e > 0 for e in energies), "positive energies")),
    ("clusters.fe55_kbeta_fraction", interval("[0, 1]")),
    ("readout.amplifier_cols readout.amplifier_rows", at_least(1)),
    ("readout.noise_spread readout.gain_spread", interval("[0, 1)")),
    ("readout.sawtooth_e readout.jump_e readout.prescan_transient_e readout.negative_e readout.sawtooth_period_px "
     "readout.sawtooth_decay_px readout.baseline_jumps readout.dead_columns readout.negative_columns "
     "readout.saturated_columns", value_range()),
    ("readout.pedestal_offset_adu", (lambda value: value[0] <= value[1], "a range [low, high]")),
    ("readout.sawtooth_period_px readout.sawtooth_decay_px", POSITIVE_LOW),
    ("readout.sawtooth_period_px readout.baseline_jumps readout.dead_columns readout.negative_columns "
     "readout.saturated_columns", INTEGER_RANGE),
    ("readout.prescan_transient_px", POSITIVE),
)


def validate(config):
    """Check every value's range; raise :class:`ConfigError` naming the first bad one."""
    check_rules(config, _RULES)
    d, c = config.detector, config.clusters
    # rules that tie two values together
    check_rules(config, (
        ("detector.height", (lambda _: d.height * d.width <= 2 ** 28, "such that height * width <= 2**28 pixels")),
        ("detector.adc_max_adu", (lambda adc: adc is None or adc > d.pedestal_adu, "None or above pedestal_adu")),
        ("clusters.xray_lines_ev", (lambda lines: c.xray_fraction == 0 or len(lines) > 0,
                                    "non-empty when xray_fraction > 0")),
        ("clusters.diffusion_b_per_um", (lambda b: b * d.thickness_um < 1, "below 1 / thickness_um")),
    ))
    return config
