"""Text helpers shared by the report's page, charts and image figures: escaping and number formatting."""

from __future__ import annotations

import html
import math

from ...stack import numbered

# Decimals shown per unit, and how a unit is written for readers.
DIGITS = {"ml": 1, "ml/m2": 1, "%": 1, "g": 1, "g/m2": 1, "m2": 2, "mm": 1, "cm2": 1, "ms": 0}
UNIT_TEXT = {"ml": "mL", "ml/m2": "mL/m²", "g/m2": "g/m²", "m2": "m²", "cm2": "cm²"}


class Html(str):
    """Text that is HTML already, so ``_cell`` does not escape it again."""


def _e(value) -> str:
    return html.escape(str(value))


def _number(value, unit: str, digits: int | None = None) -> str:
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.{DIGITS.get(unit, 2) if digits is None else digits}f}"


def _checked(row, unit: str, digits: int | None = None) -> str:
    """A measurement row's number, marked where the analysis found it implausible (the reason on hover);
    "—" for no row. Returns HTML."""
    if row is None:
        return "—"
    text = _e(_number(row.value, unit, digits))
    if row.check:
        text += f' <span class="implausible-mark" title="{_e(row.check)}">&#9888; not plausible</span>'
    return Html(text)


def _numbered(position) -> str:
    """A slice or frame position (from 0), or several, as the report numbers them (from 1); "—" for none."""
    return "—" if position is None else numbered(position)


def _unit(unit: str) -> str:
    return UNIT_TEXT.get(unit, unit)


def _css(colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour))
