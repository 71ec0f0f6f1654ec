"""The waste taxonomy and the classification the vision model must return.

The taxonomy follows household sorting rules (separate collection of PET bottles, film, styrofoam, ...).
Bump ``TAXONOMY_VERSION`` whenever a category is added, renamed or its meaning changes: cached results
carry the version they were produced under, and results of another version are not served as current.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.strict_schema import strict_subset

TAXONOMY_VERSION = "2026-11-1"


class WasteCategory(StrEnum):
    PLASTIC = "plastic"
    PET_BOTTLE = "pet_bottle"
    VINYL_FILM = "vinyl_film"
    STYROFOAM = "styrofoam"
    PAPER = "paper"
    CARDBOARD = "cardboard"
    GLASS = "glass"
    METAL_CAN = "metal_can"
    FOOD_WASTE = "food_waste"
    TEXTILE = "textile"
    HAZARDOUS = "hazardous"  # batteries, lamps, medicine, paint
    ELECTRONICS = "electronics"
    GENERAL_WASTE = "general_waste"


class WasteClassification(BaseModel):
    """What the model must answer for one photo. Anything that fails this schema never reaches a client."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: WasteCategory
    item_name: str = Field(min_length=1, max_length=120)
    disposal_instructions: str = Field(min_length=1, max_length=1000)
    recyclable: bool
    confidence: float = Field(ge=0.0, le=1.0)


def classification_json_schema() -> dict[str, Any]:
    """The answer schema in the form OpenAI's strict structured outputs accept (models/strict_schema.py).

    All fields required, no extras, the enum inlined (no ``$defs``: some OpenAI-compatible servers reject
    references). The string length bounds of :class:`WasteClassification` are not in the strict subset (the real
    endpoint answers them with a 400), so they are left out here and checked when the answer is validated.
    """
    schema = WasteClassification.model_json_schema()
    schema.pop("$defs", None)
    schema["properties"]["category"] = {
        "type": "string",
        "enum": [c.value for c in WasteCategory],
        "description": "Household sorting category",
    }
    for prop in schema["properties"].values():
        prop.pop("title", None)
    schema.pop("title", None)
    schema["additionalProperties"] = False
    schema["required"] = list(schema["properties"])
    return strict_subset(schema)
