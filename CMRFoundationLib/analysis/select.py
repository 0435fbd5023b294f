"""Which series each part of the analysis reads, why, and what else could have been used.

A role (short-axis cine, 4-chamber cine, short-axis LGE, T1 map, T2 map) is filled by the
stack whose pixel classification matches it and that meets the role's structure: a cine
needs several frames; LGE and maps need one frame (several frames are raw weighted
images, not a map) and a short-axis plane. Among the matching stacks:

* short-axis cine and LGE: the one with the most slices (the full stack, not a repeat of
  a few slices), then the higher pixel probability;
* 4-chamber cine and T2 map: the higher pixel probability, then more slices;
* T1 map: a native map before a post-contrast one (post-contrast only by its description,
  as T1 values alone cannot tell a post-contrast map from a poor native one), then as T2.

A stack is not chosen on its own when its acquisition header rules the class out
(``acquisition.py``: e.g. perfusion frames spanning many heart cycles) or when its header
words suggest another class or view than its pixels. The user can name the series of a
role (AnalysisOptions.series); every choice and every alternative not used is explained
in words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .acquisition import acquisition_problem
from .classify import header_text


@dataclass(frozen=True)
class Role:
    name: str
    title: str
    image_type: str
    view: str | None  # cine roles: the pixel view needed
    multi_frame: bool  # True: a cine; False: a single frame
    short_axis_plane: bool  # the stack's geometry must be short-axis
    most_slices_first: bool = False  # rank by slices before probability
    native_first: bool = False  # rank a post-contrast series last


ROLES = (
    Role("cine_sax", "short-axis cine", "cine", "sax", True, False, most_slices_first=True),
    Role("cine_4ch", "4-chamber cine", "cine", "4ch", True, False),
    Role("lge_sax", "short-axis LGE", "lge", None, False, True, most_slices_first=True),
    Role("t1_map", "short-axis T1 map", "t1", None, False, True, native_first=True),
    Role("t2_map", "short-axis T2 map", "t2", None, False, True),
)
ROLE_NAMES = tuple(role.name for role in ROLES)

_POST_CONTRAST = r"\b(post|postcontrast|post contrast|gd|gado)\b"


@dataclass
class Selection:
    """The series chosen for one role (None if none fits), why, and the alternatives left out."""

    role: str
    title: str
    series: str | None
    reason: str
    alternatives: list[dict] = field(default_factory=list)  # {"series": key, "why_not": text}

    def to_dict(self) -> dict:
        return {"title": self.title, "series": self.series, "reason": self.reason, "alternatives": list(self.alternatives)}


def select_series(records, overrides: dict[str, int] | None = None) -> dict[str, Selection]:
    """Choose a series for every role. ``records`` have ``key``, ``stack`` and ``classification``."""
    overrides = dict(overrides or {})
    check_roles(overrides)
    return {role.name: _select(role, records, overrides.get(role.name)) for role in ROLES}


def check_roles(overrides: dict[str, int]) -> None:
    """ValueError naming the known roles when ``overrides`` names another."""
    unknown = set(overrides) - set(ROLE_NAMES)
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; the roles are {', '.join(ROLE_NAMES)}")


def _select(role: Role, records, override: int | None) -> Selection:
    if override is not None:
        return _user_choice(role, records, override)
    matching, alternatives, by_header = [], [], []
    for record in records:
        classification = record.classification
        if not _is(role, classification):
            if classification is not None and _is(role, classification.header):
                by_header.append(record.key)
                alternatives.append({"series": record.key, "why_not": f"header suggests {role.title}, pixels say "
                                     f"{_described(classification)}"})
            continue
        problem = (_structure_problem(role, record.stack) or acquisition_problem(record.stack, role.image_type)
                   or _header_disagrees(classification))
        if problem:
            alternatives.append({"series": record.key, "why_not": problem})
        else:
            matching.append(record)
    if not matching:
        reason = f"no series classified as {role.title}"
        if by_header:
            reason += (f"; by its header {', '.join(by_header)} could be one: if so, name it "
                       f"(AnalysisOptions.series or cmrfm analyze --series {role.name}=NUMBER)")
        return Selection(role.name, role.title, None, reason, alternatives)
    chosen, *others = sorted(matching, key=lambda record: _rank(role, record))
    alternatives = [{"series": r.key, "why_not": _why_behind(role, chosen, r)} for r in others] + alternatives
    return Selection(role.name, role.title, chosen.key, _why_chosen(role, chosen, len(matching)), alternatives)


def _is(role: Role, answer) -> bool:
    """Whether a classification (or header guess) names the role's image type and, for a cine, its view."""
    return answer is not None and answer.image_type == role.image_type and role.view in (None, answer.view)


def _user_choice(role: Role, records, number: int) -> Selection:
    of_series = [r for r in records if r.stack.info.series_number == number]
    if not of_series:
        return Selection(role.name, role.title, None, f"series {number} was asked for but is not in the study")
    chosen = max(of_series, key=lambda r: r.stack.n_slices)
    reason = f"chosen by the user (series {number})"
    problem = _structure_problem(role, chosen.stack) or acquisition_problem(chosen.stack, role.image_type)
    if chosen.classification is not None and chosen.classification.image_type != role.image_type:
        reason += f"; the pixels say {_described(chosen.classification)}"
    if problem:
        reason += f"; note: {problem}"
    return Selection(role.name, role.title, chosen.key, reason)


def _structure_problem(role: Role, stack) -> str | None:
    """Why a stack of the right class cannot fill the role, or None."""
    if role.multi_frame and stack.n_frames < 2:
        return "a single frame: not a cine"
    if not role.multi_frame and stack.n_frames > 1:
        return f"{stack.n_frames} frames: raw images rather than one {role.image_type} image per slice"
    if role.short_axis_plane and stack.orientation != "SAX-like":
        return f"not a short-axis plane ({stack.orientation})"
    return None


def _header_disagrees(classification) -> str | None:
    """Pixels and header must agree before a series is used on its own: the header's words
    are free text, but a series that says "perfusion" or "LGE" and looks like a cine is
    more often misread by the model than mislabelled by the scanner."""
    disagreements = classification.disagreements()
    if not disagreements:
        return None
    return f"{'; '.join(disagreements)}: not used until they agree (name the series to use it anyway)"


def _rank(role: Role, record) -> tuple:
    """Sort key: the best candidate first."""
    p = record.classification.probability_of(role.image_type, role.view)
    slices = record.stack.n_slices
    post = role.native_first and is_post_contrast(record.stack.info)
    return (post, -slices, -p) if role.most_slices_first else (post, -p, -slices)


def is_post_contrast(info) -> bool:
    """Whether the description or protocol says post-contrast."""
    return re.search(_POST_CONTRAST, header_text(info)) is not None


def _why_chosen(role: Role, record, n_matching: int) -> str:
    p = record.classification.probability_of(role.image_type, role.view)
    text = f"classified as {role.title} from its pixels (p={p:.2f})" if record.classification.image_type_source == "pixels" \
        else f"classified as {role.title} from its header (model unavailable)"
    if n_matching > 1:
        text += ("; native before post-contrast" if role.native_first else "") + \
            ("; most slices" if role.most_slices_first else "; most probable")
    return f"{text} ({record.stack.n_slices} slice(s) x {record.stack.n_frames} frame(s))"


def _why_behind(role: Role, chosen, other) -> str:
    if role.native_first and is_post_contrast(other.stack.info) and not is_post_contrast(chosen.stack.info):
        return "post-contrast by its description; the native map is used"
    if role.most_slices_first and other.stack.n_slices != chosen.stack.n_slices:
        return f"fewer slices ({other.stack.n_slices} vs {chosen.stack.n_slices})"
    p_other = other.classification.probability_of(role.image_type, role.view)
    p_chosen = chosen.classification.probability_of(role.image_type, role.view)
    return f"less probably {role.title} (p={p_other:.2f} vs {p_chosen:.2f})"


def _described(classification) -> str:
    if classification is None or classification.image_type is None:
        return "unknown"
    text = classification.image_type
    if classification.view is not None:
        text += f" {classification.view}"
    p = classification.image_type_confidence
    return text if p is None else f"{text} (p={p:.2f})"
