"""Simulation configuration: dataclasses with sourced defaults, presets, TOML files and overrides.

Every quantity is physical (electrons, eV, µm, seconds) except the two numbers that turn
electrons into ADU at the output: ``gain_adu_per_e`` and ``pedestal_adu``. Ranges are
``(low, high)`` pairs from which each image draws a value. Sources: docs/physics.md of the repository.
"""

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field

from ccdseg.errors import ConfigError


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
class SimConfig:
    """Everything the simulator needs for one image."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    glow: GlowConfig = field(default_factory=GlowConfig)
    hot: HotPixelConfig = field(default_factory=HotPixelConfig)
    clusters: ClusterConfig = field(default_factory=ClusterConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)

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


def read_toml(path, what="config"):
    """Read a TOML file into a dict; :class:`ConfigError` naming the file when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what} ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None


def parse_override(text):
    """Split ``"key=value"`` and read the value as TOML (a number, list, ...), else as a plain string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, value = (part.strip() for part in text.split("=", 1))
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def _parse_overrides(overrides):
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        items = overrides.items()
    else:
        items = [parse_override(text) for text in overrides]
    nested = {}
    for key, value in items:
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
            setattr(target, key, _coerce(f"{section}.{key}", getattr(target, key), value))


def _coerce(name, current, value):
    """Convert ``value`` to the type of the current value, or fail naming the parameter."""
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or (name not in _LISTS and len(value) != len(current)):
            raise ConfigError(f"{name} must be a list like {list(current)}, got {value!r}")
        return tuple(_coerce(name, current[0], v) for v in value)
    if isinstance(current, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(current, bool):
            raise ConfigError(f"{name} must be a {type(current).__name__}, got {value!r}")
        return value
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if isinstance(current, float) or current is None:
        if value is None or (current is None and value in ("none", "None")):
            return None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return copy.deepcopy(value)


def validate(config):
    """Check every value's range; raise :class:`ConfigError` naming the first bad one."""
    d, g, h, c, lab = config.detector, config.glow, config.hot, config.clusters, config.labels

    def check(ok, section, name, requirement):
        if not ok:
            value = getattr(getattr(config, section), name)
            raise ConfigError(f"{section}.{name} = {value!r}: must be {requirement}")

    def check_range(section, name, low=0.0, integer=False):
        lo, hi = getattr(getattr(config, section), name)
        check(low <= lo <= hi, section, name, f"a range [low, high] with {low} <= low <= high")
        if integer:
            check(float(lo).is_integer() and float(hi).is_integer(), section, name, "a range of integers")

    check(d.height >= 1, "detector", "height", ">= 1")
    check(d.width >= 1, "detector", "width", ">= 1")
    check(d.height * d.width <= 2 ** 28, "detector", "height", "such that height * width <= 2**28 pixels")
    for name in ("pixel_size_um", "thickness_um", "gain_adu_per_e", "full_well_e"):
        check(getattr(d, name) > 0, "detector", name, "> 0")
    for name in ("read_noise_e", "dark_current_e_per_day", "spurious_charge_e", "exposure_s",
                 "row_readout_s", "pedestal_drift_adu", "prescan_columns", "overscan_columns"):
        check(getattr(d, name) >= 0, "detector", name, ">= 0")
    check_range("detector", "dark_charge_e")
    check(d.n_samples >= 1, "detector", "n_samples", ">= 1")
    check(0 <= d.cti < 1, "detector", "cti", "in [0, 1)")
    check(d.adc_max_adu is None or d.adc_max_adu > d.pedestal_adu, "detector", "adc_max_adu",
          "None or above pedestal_adu")
    check(0 <= g.probability <= 1, "glow", "probability", "in [0, 1]")
    check(len(g.shapes) > 0 and set(g.shapes) <= {"corner", "edge", "band"}, "glow", "shapes",
          "a non-empty list of 'corner', 'edge', 'band'")
    check_range("glow", "amplitude_e")
    check(g.length_px[0] > 0, "glow", "length_px", "positive")
    check_range("glow", "length_px")
    check_range("glow", "band_columns", integer=True)
    check_range("glow", "warm_columns", integer=True)
    for name in ("pixels_per_mpix", "streaks_per_mpix"):
        check_range("hot", name)
    for name in ("columns", "rows"):
        check_range("hot", name, integer=True)
    check_range("hot", "streak_length_px", low=1, integer=True)
    check(0 <= h.partial_fraction <= 1, "hot", "partial_fraction", "in [0, 1]")
    check(h.amplitude_e[0] > 0, "hot", "amplitude_e", "positive")
    check_range("hot", "amplitude_e")
    for name in ("points_per_mpix", "worms_per_mpix", "muons_per_mpix", "alphas_per_mpix"):
        check_range("clusters", name)
    for name in ("point_energy_ev", "worm_energy_ev", "alpha_energy_ev", "alpha_sigma_px"):
        check(getattr(c, name)[0] > 0, "clusters", name, "positive")
        check_range("clusters", name)
    check(0 <= c.xray_fraction <= 1, "clusters", "xray_fraction", "in [0, 1]")
    check(all(e > 0 for e in c.xray_lines_ev), "clusters", "xray_lines_ev", "positive energies")
    check(c.xray_fraction == 0 or len(c.xray_lines_ev) > 0, "clusters", "xray_lines_ev",
          "non-empty when xray_fraction > 0")
    for name in ("muon_e_per_um", "ev_per_pair", "diffusion_a_um2", "diffusion_b_per_um"):
        check(getattr(c, name) > 0, "clusters", name, "> 0")
    check(c.fano >= 0, "clusters", "fano", ">= 0")
    check(c.max_packets >= 1, "clusters", "max_packets", ">= 1")
    check_range("clusters", "fe55_per_mpix")
    check(all(e > 0 for e in c.fe55_lines_ev), "clusters", "fe55_lines_ev", "positive energies")
    check(0 <= c.fe55_kbeta_fraction <= 1, "clusters", "fe55_kbeta_fraction", "in [0, 1]")
    check(d.gain_spread >= 0, "detector", "gain_spread", ">= 0")
    check(d.rice_q >= 0, "detector", "rice_q", ">= 0")
    check(c.diffusion_b_per_um * d.thickness_um < 1, "clusters", "diffusion_b_per_um", "below 1 / thickness_um")
    for name in ("cluster_min_e", "cluster_min_sigma", "glow_min_e", "glow_min_sigma"):
        check(getattr(lab, name) >= 0, "labels", name, ">= 0")
    return config
