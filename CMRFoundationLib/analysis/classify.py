"""What each stack is: image type and cine view from its pixels, cross-checked with its header.

The models decide. Series descriptions and protocol names are free text that sites fill
in as they like (and copy between protocols), so the header guess is only a cross-check:
where it disagrees with the pixels, the analysis raises a quality flag and the pixels win.
The header decides only when a model cannot run at all (weights missing), and then says so.

Two structural rules apply on top of the models. A single-frame stack cannot be a cine,
so "cine" is left out when choosing the class of a one-frame stack (the view model runs
on multi-frame stacks only: it was trained on cine images). And the planes of a study
know each other (``apply_plane_geometry``): a long-axis view (2, 3 or 4 chambers)
contains the heart's long axis, to which the short-axis slices are perpendicular, so a
cine whose plane stands at a large angle to the study's short-axis stack is not a
short-axis view, and one parallel to it is not a long-axis view. A real long-axis cine
whose texture the view model has never seen is then at worst a wrong long-axis view,
not "sax".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..stack import ImageStack, SeriesInfo
from ..tasks import CINE_VIEWS, IMAGE_TYPES

# Plane geometry (apply_plane_geometry): the short-axis reference is a cine of at least this
# many parallel slices; planes at least LONG_AXIS_MIN_ANGLE_DEG from it are long-axis (true
# long-axis views stand near 90 degrees), planes within SHORT_AXIS_MAX_ANGLE_DEG short-axis.
MIN_SAX_STACK_SLICES = 5
LONG_AXIS_MIN_ANGLE_DEG = 45.0
SHORT_AXIS_MAX_ANGLE_DEG = 20.0
LONG_AXIS_VIEWS = ("2ch", "3ch", "4ch")

# A class whose probability is below this is reported as low confidence.
LOW_CONFIDENCE = 0.5
# At most this many images of a stack are classified (spread over slices and frames).
MAX_IMAGES = 48

# Header words, matched on lower-case text with punctuation turned into spaces; the
# first rule that matches wins, so maps (MOLLI reads out with bSSFP) come before cine.
_TYPE_RULES = (
    ("t1", r"\b(t1 ?map\w*|molli|shmolli|t1 mapping)\b"),
    ("t2", r"\b(t2 ?map\w*|t2 mapping)\b"),
    ("lge", r"\b(lge|psir|de|mde|late|delayed|viability)\b"),
    ("cine", r"\b(cine|tfi\w*|trufi\w*|tfisp|ssfp|bssfp|fiesta|bffe|balanced)\b"),
    ("other", r"\b(localizer|localiser|scout|survey|haste|stir|tse|perfusion|flow)\b"),
)
_VIEW_RULES = (
    ("aorta", r"\b(aorta|aortic|ao)\b"),
    ("4ch", r"\b(4ch|4 ch|4cv|hla|four chamber)\b"),
    ("3ch", r"\b(3ch|3 ch|3cv|lvot)\b"),
    ("2ch", r"\b(2ch|2 ch|2cv|vla|two chamber)\b"),
    ("sax", r"\b(sax|sa|short axis|shortaxis|sh ax)\b"),
)


@dataclass
class HeaderGuess:
    """What the header text suggests; None where it says nothing clear."""

    image_type: str | None
    view: str | None
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"image_type": self.image_type, "view": self.view, "evidence": list(self.evidence)}


def header_text(info: SeriesInfo) -> str:
    """Description, protocol, sequence name and image type as one lower-case, space-separated text."""
    parts = [info.series_description, info.protocol_name, info.sequence_name, " ".join(info.image_type)]
    return " ".join(re.sub(r"[^a-z0-9]+", " ", part.lower()) for part in parts if part).strip()


def guess_from_header(info: SeriesInfo, n_frames: int) -> HeaderGuess:
    """Image type and view suggested by the header words (and, for LGE, an inversion time)."""
    text = header_text(info)
    guess = HeaderGuess(None, None)
    for name, pattern in _TYPE_RULES:
        found = re.search(pattern, text)
        if found and (name != "cine" or n_frames > 1):
            guess.image_type = name
            guess.evidence.append(f"'{found.group(0)}' in the header suggests {name}")
            break
    if guess.image_type is None and n_frames == 1 and info.inversion_time and "IR" in info.scanning_sequence:
        guess.image_type = "lge"
        guess.evidence.append(f"single-frame inversion recovery (TI {info.inversion_time:g} ms) suggests lge")
    for name, pattern in _VIEW_RULES:
        found = re.search(pattern, text)
        if found:
            guess.view = name
            guess.evidence.append(f"'{found.group(0)}' in the header suggests the {name} view")
            break
    return guess


@dataclass
class StackClassification:
    """The image type (and cine view) used for a stack, where it came from, and the header's opinion."""

    image_type: str | None
    image_type_source: str  # "pixels", "header" (no model) or "none"
    view: str | None = None  # multi-frame stacks only
    view_source: str = "none"  # "pixels", "pixels + plane geometry", "header" or "none"
    image_type_probabilities: dict[str, float] | None = None
    view_probabilities: dict[str, float] | None = None
    header: HeaderGuess = field(default_factory=lambda: HeaderGuess(None, None))
    notes: list[str] = field(default_factory=list)

    @property
    def image_type_confidence(self) -> float | None:
        probabilities = self.image_type_probabilities
        return None if probabilities is None or self.image_type is None else probabilities[self.image_type]

    @property
    def view_confidence(self) -> float | None:
        probabilities = self.view_probabilities
        return None if probabilities is None or self.view is None else probabilities[self.view]

    def probability_of(self, image_type: str, view: str | None = None) -> float:
        """Pixel probability of an image type (and view); 0 where the model did not run."""
        p = (self.image_type_probabilities or {}).get(image_type, 0.0)
        if view is not None:
            p *= (self.view_probabilities or {}).get(view, 0.0)
        return p

    def disagreements(self) -> list[str]:
        """Where the header suggests something else than the pixels decided."""
        found = []
        if self.image_type_source == "pixels" and self.header.image_type not in (None, self.image_type):
            found.append(f"header suggests {self.header.image_type}, pixels say {self.image_type}"
                         f" (p={self.image_type_confidence:.2f})")
        if self.view_source.startswith("pixels") and self.header.view not in (None, self.view):
            found.append(f"header suggests the {self.header.view} view, pixels say {self.view} (p={self.view_confidence:.2f})")
        return found

    def to_dict(self) -> dict:
        def rounded(probabilities):
            return None if probabilities is None else {k: round(v, 4) for k, v in probabilities.items()}

        return {
            "image_type": self.image_type,
            "image_type_source": self.image_type_source,
            "image_type_probabilities": rounded(self.image_type_probabilities),
            "view": self.view,
            "view_source": self.view_source,
            "view_probabilities": rounded(self.view_probabilities),
            "header_guess": self.header.to_dict(),
            "disagreements": self.disagreements(),
            "notes": list(self.notes),
        }


def classify_stack(stack: ImageStack, image_type_model=None, view_model=None) -> StackClassification:
    """Classify one stack with the image_type and cine_view TaskPredictors (either may be None).

    A model that is None leaves that answer to the header guess (``*_source`` says which).
    """
    header = guess_from_header(stack.info, stack.n_frames)
    result = StackClassification(None, "none", header=header)
    sample = sample_images(stack)
    possible = [name for name in IMAGE_TYPES if name != "cine" or stack.n_frames > 1]
    if image_type_model is not None:
        probabilities = _mean_probabilities(image_type_model, sample, IMAGE_TYPES)
        result.image_type_probabilities = probabilities
        result.image_type = max(possible, key=probabilities.__getitem__)
        result.image_type_source = "pixels"
        if stack.n_frames == 1 and max(probabilities, key=probabilities.__getitem__) == "cine":
            result.notes.append("the model's first choice was cine, impossible for a single-frame stack")
    elif header.image_type is not None:
        result.image_type, result.image_type_source = header.image_type, "header"
    if stack.n_frames > 1:
        if view_model is not None:
            result.view_probabilities = _mean_probabilities(view_model, sample, CINE_VIEWS)
            result.view = max(CINE_VIEWS, key=result.view_probabilities.__getitem__)
            result.view_source = "pixels"
        elif header.view is not None:
            result.view, result.view_source = header.view, "header"
    if sample.pixels.shape[:2] != stack.pixels.shape[:2]:
        result.notes.append(f"classified on {sample.n_slices} slice(s) x {sample.n_frames} frame(s) of the stack")
    return result


def apply_plane_geometry(classified: list[tuple[str, ImageStack, StackClassification]]) -> str | None:
    """Correct cine views that the study's plane geometry rules out (see the module
    docstring); returns the key of the short-axis reference stack, or None when the study
    has none (then nothing changes). Views stay the pixels' choice among the views the
    geometry allows, their probabilities renormalised over those; a note says why."""
    cines = [(key, stack, c) for key, stack, c in classified
             if c.image_type == "cine" and c.view_probabilities is not None and _has_plane(stack)]
    candidates = [entry for entry in cines if entry[1].n_slices >= MIN_SAX_STACK_SLICES]
    if not candidates:
        return None
    ref_key, reference, _ = max(candidates, key=lambda e: (e[1].n_slices, e[2].view_probabilities.get("sax", 0.0)))
    for key, stack, c in cines:
        if key == ref_key:
            continue
        angle = float(np.degrees(np.arccos(min(1.0, abs(float(stack.normal @ reference.normal))))))
        if angle >= LONG_AXIS_MIN_ANGLE_DEG:
            allowed, why = [v for v in CINE_VIEWS if v != "sax"], "not a short-axis view"
        elif angle <= SHORT_AXIS_MAX_ANGLE_DEG:
            allowed, why = [v for v in CINE_VIEWS if v not in LONG_AXIS_VIEWS], "not a long-axis view"
        else:
            continue
        raw = dict(c.view_probabilities)
        total = sum(raw[v] for v in allowed)
        if total <= 0:
            continue
        c.view_probabilities = {v: (raw[v] / total if v in allowed else 0.0) for v in CINE_VIEWS}
        chosen = max(allowed, key=raw.__getitem__)
        if chosen != c.view:
            c.notes.append(f"plane at {angle:.0f} deg to the short-axis stack {ref_key}: {why}; the view model's "
                           f"first choice {c.view} (p={raw[c.view]:.2f}) replaced by {chosen}")
            c.view, c.view_source = chosen, "pixels + plane geometry"
    return ref_key


def _has_plane(stack: ImageStack) -> bool:
    normal = stack.normal
    return bool(np.isfinite(normal).all() and abs(np.linalg.norm(normal) - 1.0) < 1e-3)


def sample_images(stack: ImageStack, max_images: int = MAX_IMAGES) -> ImageStack:
    """The stack itself, or evenly spread slices and frames of it when it has more than ``max_images``."""
    slices, frames = stack.n_slices, stack.n_frames
    if slices * frames <= max_images:
        return stack
    n_frames = min(frames, 4)
    n_slices = min(slices, max(1, max_images // n_frames))
    pick_slices = np.unique(np.linspace(0, slices - 1, n_slices).round().astype(int))
    pick_frames = np.unique(np.linspace(0, frames - 1, n_frames).round().astype(int))
    return ImageStack(stack.pixels[np.ix_(pick_slices, pick_frames)], stack.ijk_to_lps, stack.info)


def _mean_probabilities(model, stack: ImageStack, classes: tuple[str, ...]) -> dict[str, float]:
    probabilities = model.predict_stack(stack).probabilities
    return {name: float(p) for name, p in zip(classes, probabilities)}
