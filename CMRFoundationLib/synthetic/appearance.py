"""How each tissue looks in each synthetic sequence, and the scanner's imperfections.

Magnitude sequences (cine bSSFP, LGE, black-blood HASTE, localizer) get relative signal
values, a smooth receive-coil bias and Rician noise; parametric maps (T1, T2) carry
values in milliseconds with Gaussian fitting noise and no bias, as scanners deliver them.

The series a study holds but we do not analyse (the distractors) have their own physics:
first-pass perfusion, whose tissue signal follows the contrast bolus over the dynamics
(``bolus_table``), and phase-contrast flow, whose phase images carry velocity
(``flow_velocity_cm_s``, ``phase_image``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .phantom import SmoothNoise, Tissue

T = Tissue


@dataclass(frozen=True)
class Sequence:
    name: str
    values: dict[Tissue, float]
    is_map: bool
    noise: float  # Rician sigma relative to blood (magnitude) or relative SD (maps)
    scale: float = 1.0  # stored-value scale of magnitude images

    def table(self, rng: np.random.Generator, jitter: float) -> np.ndarray:
        """Signal of every tissue, with a per-patient jitter (so no two studies match)."""
        table = np.zeros(len(Tissue), dtype=np.float32)
        for tissue, value in self.values.items():
            table[tissue] = value * (1 + rng.uniform(-jitter, jitter))
        table[T.PAPILLARY] = table[T.LV_MYOCARDIUM]
        table[T.VESSEL] = table[T.LV_BLOOD]  # pulmonary vessels carry blood
        return table


def _blood(value: float) -> dict[Tissue, float]:
    return {T.LV_BLOOD: value, T.RV_BLOOD: value, T.LA_BLOOD: value, T.RA_BLOOD: value, T.AORTA: value}


SEQUENCES = {
    # Bright blood, grey myocardium, bright fat, black lungs.
    "bssfp": Sequence(
        "bssfp",
        {**_blood(1.0), T.LV_MYOCARDIUM: 0.27, T.RV_MYOCARDIUM: 0.27, T.INFARCT: 0.30, T.MVO: 0.27, T.FAT: 0.85,
         T.LUNG: 0.04, T.LIVER: 0.30, T.MUSCLE: 0.24, T.BONE: 0.35, T.SOFT_TISSUE: 0.38},
        is_map=False, noise=0.03, scale=1200,
    ),
    # Inversion time set to null normal myocardium: scar bright, MVO dark core.
    "lge": Sequence(
        "lge",
        {**_blood(0.45), T.LV_MYOCARDIUM: 0.03, T.RV_MYOCARDIUM: 0.05, T.INFARCT: 1.0, T.MVO: 0.05, T.FAT: 0.55,
         T.LUNG: 0.02, T.LIVER: 0.22, T.MUSCLE: 0.08, T.BONE: 0.30, T.SOFT_TISSUE: 0.25},
        is_map=False, noise=0.035, scale=1500,
    ),
    # Native MOLLI T1 at 1.5 T, ms.
    "t1_native": Sequence(
        "t1_native",
        {**_blood(1580), T.LV_MYOCARDIUM: 1000, T.RV_MYOCARDIUM: 1010, T.INFARCT: 1320, T.MVO: 1150, T.FAT: 280,
         T.LUNG: 1200, T.LIVER: 580, T.MUSCLE: 1010, T.BONE: 600, T.SOFT_TISSUE: 1100},
        is_map=True, noise=0.03,
    ),
    # Post-contrast T1 (about 15 min after gadolinium), ms.
    "t1_post": Sequence(
        "t1_post",
        {**_blood(300), T.LV_MYOCARDIUM: 470, T.RV_MYOCARDIUM: 460, T.INFARCT: 290, T.MVO: 520, T.FAT: 240,
         T.LUNG: 400, T.LIVER: 360, T.MUSCLE: 600, T.BONE: 350, T.SOFT_TISSUE: 450},
        is_map=True, noise=0.03,
    ),
    # T2 map, ms.
    "t2": Sequence(
        "t2",
        {**_blood(190), T.LV_MYOCARDIUM: 50, T.RV_MYOCARDIUM: 50, T.INFARCT: 62, T.MVO: 45, T.FAT: 70,
         T.LUNG: 40, T.LIVER: 33, T.MUSCLE: 35, T.BONE: 45, T.SOFT_TISSUE: 60},
        is_map=True, noise=0.03,
    ),
    # Black-blood single-shot turbo spin echo: dark blood, grey muscle, bright fat.
    "haste": Sequence(
        "haste",
        {**_blood(0.02), T.LV_MYOCARDIUM: 0.42, T.RV_MYOCARDIUM: 0.42, T.INFARCT: 0.50, T.MVO: 0.45, T.FAT: 0.95,
         T.LUNG: 0.03, T.LIVER: 0.40, T.MUSCLE: 0.34, T.BONE: 0.50, T.SOFT_TISSUE: 0.52},
        is_map=False, noise=0.03, scale=1000,
    ),
    # Distractors (drawn after the others, so that their tables leave the rest unchanged).
    # First-pass perfusion, saturation-recovery gradient echo before contrast: dim, T1-weighted.
    "perfusion": Sequence(
        "perfusion",
        {**_blood(0.20), T.LV_MYOCARDIUM: 0.16, T.RV_MYOCARDIUM: 0.16, T.INFARCT: 0.16, T.MVO: 0.16, T.FAT: 0.45,
         T.LUNG: 0.03, T.LIVER: 0.20, T.MUSCLE: 0.15, T.BONE: 0.20, T.SOFT_TISSUE: 0.22},
        is_map=False, noise=0.05, scale=1000,
    ),
    # Phase-contrast magnitude (spoiled gradient echo): inflowing blood bright.
    "flow_magnitude": Sequence(
        "flow_magnitude",
        {**_blood(0.75), T.AORTA: 1.0, T.LV_MYOCARDIUM: 0.30, T.RV_MYOCARDIUM: 0.30, T.INFARCT: 0.30, T.MVO: 0.30,
         T.FAT: 0.65, T.LUNG: 0.04, T.LIVER: 0.30, T.MUSCLE: 0.28, T.BONE: 0.30, T.SOFT_TISSUE: 0.35},
        is_map=False, noise=0.03, scale=1000,
    ),
}


@dataclass(frozen=True)
class Bolus:
    """When a contrast bolus reaches each compartment (s after the injection) on its first pass."""

    right_heart_s: float
    left_heart_s: float
    myocardium_s: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Bolus:
        right = float(rng.uniform(3.0, 6.0))
        left = right + float(rng.uniform(3.0, 5.0))  # through the lungs
        return cls(right, left, left + float(rng.uniform(1.0, 2.5)))


def _first_pass(seconds: float, arrival: float, to_peak: float) -> float:
    """Gamma-variate bolus (peak 1 at ``arrival + to_peak``) plus the recirculation it leaves."""
    if seconds <= arrival:
        return 0.0
    x = (seconds - arrival) / to_peak
    return float(x**3 * np.exp(3 * (1 - x)) + 0.15 * (1 - np.exp(-(seconds - arrival) / 8.0)))


def bolus_table(table: np.ndarray, bolus: Bolus, seconds: float) -> np.ndarray:
    """The perfusion tissue table ``seconds`` after the injection: the bolus brightens the right
    heart first, then the left heart and aorta, then the myocardium (far less; a scar hardly)."""
    out = table.copy()
    right = _first_pass(seconds, bolus.right_heart_s, 2.5)
    left = _first_pass(seconds, bolus.left_heart_s, 3.0)
    muscle = _first_pass(seconds, bolus.myocardium_s, 5.0)
    for tissue in (T.RV_BLOOD, T.RA_BLOOD, T.VESSEL):
        out[tissue] += 0.9 * right
    for tissue in (T.LV_BLOOD, T.LA_BLOOD, T.AORTA):
        out[tissue] += 0.8 * left
    for tissue in (T.LV_MYOCARDIUM, T.RV_MYOCARDIUM, T.PAPILLARY):
        out[tissue] += 0.25 * muscle
    out[T.INFARCT] += 0.06 * muscle  # a perfusion defect
    for tissue in (T.LIVER, T.MUSCLE, T.SOFT_TISSUE):
        out[tissue] += 0.08 * muscle
    return out


def flow_velocity_cm_s(phase: float, peak: float, es_phase: float) -> float:
    """Through-plane velocity in the ascending aorta over the cycle: ejection in systole, a
    little backflow as the valve closes, nothing in diastole."""
    if phase < es_phase:
        return peak * float(np.sin(np.pi * phase / es_phase))
    return -0.08 * peak * float(np.exp(-(phase - es_phase) / 0.04))


def phase_image(velocity_cm_s: np.ndarray, magnitude: np.ndarray, noise: float, venc: float,
                rng: np.random.Generator) -> np.ndarray:
    """Phase-contrast values as Siemens stores them (-4096..4095 for -VENC..+VENC): the velocity
    plus phase noise that grows as the magnitude falls, pure noise where there is no signal."""
    phase = np.pi * np.clip(velocity_cm_s / venc, -1, 1)
    spread = noise / np.maximum(magnitude, 1e-6)  # radians: the phase error of a noisy vector
    noisy = phase + rng.normal(0, 1, phase.shape) * np.minimum(spread, np.pi)
    noisy = np.where(magnitude < 2 * noise, rng.uniform(-np.pi, np.pi, phase.shape), noisy)
    wrapped = np.mod(noisy + np.pi, 2 * np.pi) - np.pi
    return np.round(wrapped / np.pi * 4096).clip(-4096, 4095).astype(np.float32)


class CoilBias:
    """A smooth multiplicative receive field from anterior and posterior coil elements.

    Defined in patient coordinates, so every series of a study shares it.
    """

    def __init__(self, rng: np.random.Generator, centre_lps: np.ndarray, body_half_depth: float):
        elements = []
        for y in (-body_half_depth - 20, body_half_depth + 20):
            for x in (-90, 0, 90):
                jitter = rng.normal(0, 15, 3)
                elements.append(np.array([centre_lps[0] + x, y, centre_lps[2]]) + jitter)
        self.elements = np.array(elements)
        self.gains = rng.uniform(0.7, 1.3, len(elements))
        self.width = rng.uniform(140, 200)
        self._norm = 1.0 / float(self._raw(np.asarray(centre_lps, dtype=float)[None])[0])

    def _raw(self, points: np.ndarray) -> np.ndarray:
        d2 = ((points[..., None, :] - self.elements) ** 2).sum(-1)
        return 0.25 + (self.gains * np.exp(-d2 / (2 * self.width**2))).sum(-1)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self._raw(points) * self._norm


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise, as an MR magnitude image is."""
    real = signal + rng.normal(0, sigma, signal.shape)
    imag = rng.normal(0, sigma, signal.shape)
    return np.hypot(real, imag).astype(np.float32)


def add_map_noise(values: np.ndarray, relative_sd: float, rng: np.random.Generator) -> np.ndarray:
    """Fitting noise of a parametric map; air (no signal) stays zero as scanners mask it."""
    noisy = values * (1 + rng.normal(0, relative_sd, values.shape))
    return np.where(values > 0, np.clip(noisy, 0, None), 0).astype(np.float32)


@dataclass(frozen=True)
class CineLook:
    """How this study's cines look beyond the tissue table: drawn once per study.

    Real cines differ between scanners and patients in blood-myocardium contrast, noise,
    coil shading and sharpness, and show texture (flow, trabeculae, tissue structure); a
    model trained on flat, identical phantoms learns none of that. Applied to every cine
    view alike, so that none of it gives a view away.
    """

    myocardium_gain: float  # scales myocardium (and papillary) signal: blood-myocardium contrast
    noise_gain: float  # scales the sequence's noise
    shading_power: float  # coil bias ** power: from nearly flat to strong fall-off
    blur_px: float  # Gaussian point spread (sigma, pixels): soft edges of a real acquisition
    texture: float  # relative amplitude of tissue texture
    trabeculae: float  # how much the trabeculated blood next to the wall darkens
    seed: int

    @classmethod
    def draw(cls, seed: int) -> CineLook:
        # Its own stream, so the rest of the study (tables, coil, other series) is unchanged.
        rng = np.random.default_rng([seed, 2])
        return cls(
            myocardium_gain=float(rng.uniform(0.75, 1.35)),
            noise_gain=float(rng.uniform(0.7, 2.0)),
            shading_power=float(rng.uniform(0.6, 1.8)),
            blur_px=float(rng.uniform(0.5, 1.0)),
            texture=float(rng.uniform(0.6, 1.4)),
            trabeculae=float(rng.uniform(0.25, 0.5)),
            seed=seed,
        )

    def table(self, table: np.ndarray) -> np.ndarray:
        out = table.copy()
        for tissue in (T.LV_MYOCARDIUM, T.RV_MYOCARDIUM, T.PAPILLARY, T.INFARCT, T.MVO):
            out[tissue] *= self.myocardium_gain
        return out

    def fields(self) -> tuple[SmoothNoise, SmoothNoise]:
        """(fine, coarse) texture fields in patient space, the same for every cine of the study."""
        rng = np.random.default_rng([self.seed, 3])
        return SmoothNoise(rng, 4.0, octaves=2), SmoothNoise(rng, 30.0, octaves=2)

    def textured(self, values: np.ndarray, tissue: np.ndarray, fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
        """Signal with texture: fine grain in solid tissue, slow flow-related swells in blood."""
        amplitude = _TEXTURE[tissue] * self.texture
        blood = _IS_BLOOD[tissue]
        return values * (1 + amplitude * np.where(blood, coarse, fine))

    def trabeculate(self, signal: np.ndarray, labels: np.ndarray, grain: np.ndarray, pixel_mm: float) -> np.ndarray:
        """Darken the ventricular blood within ~4 mm of the wall in strands (trabeculae).

        They stay labelled blood pool, as ACDC and clinical contours count them.
        """
        blood = np.isin(labels, (1, 3))
        wall = np.isin(labels, (2, 4, 8, 9))
        near = wall.copy()
        for _ in range(max(1, int(round(4.0 / pixel_mm)))):
            near[1:] |= near[:-1].copy()
            near[:-1] |= near[1:].copy()
            near[:, 1:] |= near[:, :-1].copy()
            near[:, :-1] |= near[:, 1:].copy()
        strands = np.clip(2.5 * grain, 0, 1)  # the positive lobes of the fine field
        return np.where(blood & near, signal * (1 - self.trabeculae * strands), signal).astype(np.float32)

    def blur(self, images: np.ndarray) -> np.ndarray:
        """Gaussian blur over the last two axes (separable, edges padded by replication)."""
        radius = int(np.ceil(3 * self.blur_px))
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / self.blur_px) ** 2)
        kernel /= kernel.sum()
        for axis in (-2, -1):
            pad = [(0, 0)] * images.ndim
            pad[axis] = (radius, radius)
            padded = np.pad(images, pad, mode="edge")
            n = images.shape[axis]
            images = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(kernel))
        return images.astype(np.float32)


# Texture amplitude per tissue (relative signal change).
_TEXTURE = np.zeros(len(Tissue), dtype=np.float32)
for _tissue, _amplitude in {T.LV_BLOOD: 0.08, T.RV_BLOOD: 0.10, T.LA_BLOOD: 0.10, T.RA_BLOOD: 0.10, T.AORTA: 0.06,
                            T.VESSEL: 0.3, T.LV_MYOCARDIUM: 0.10, T.RV_MYOCARDIUM: 0.10, T.PAPILLARY: 0.10,
                            T.INFARCT: 0.10, T.MVO: 0.10, T.FAT: 0.12, T.LUNG: 0.6, T.LIVER: 0.10, T.MUSCLE: 0.15,
                            T.BONE: 0.25, T.SOFT_TISSUE: 0.25}.items():
    _TEXTURE[_tissue] = _amplitude
_IS_BLOOD = np.zeros(len(Tissue), dtype=bool)
_IS_BLOOD[[T.LV_BLOOD, T.RV_BLOOD, T.LA_BLOOD, T.RA_BLOOD, T.AORTA]] = True
