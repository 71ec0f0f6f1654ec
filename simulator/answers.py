"""Deterministic "classification" of an image: a hash of its bytes picks the answer. Pure.

The same image always gets the same answer, so caching and deduplication can be asserted end to end;
different images spread over every category, so downstream code sees the whole taxonomy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from models.classification import WasteCategory, WasteClassification


@dataclass(frozen=True)
class _Profile:
    items: tuple[str, ...]
    disposal_instructions: str
    recyclable: bool


_PROFILES: dict[WasteCategory, _Profile] = {
    WasteCategory.PLASTIC: _Profile(
        ("plastic food container", "yogurt cup", "detergent bottle", "plastic clamshell"),
        "Empty and rinse, remove labels where possible, and put it in the plastic recycling bin.",
        True,
    ),
    WasteCategory.PET_BOTTLE: _Profile(
        ("clear PET water bottle", "PET soda bottle", "transparent drink bottle"),
        "Empty it, peel off the label, crush it, put the cap in plastics and the bottle in the PET collection.",
        True,
    ),
    WasteCategory.VINYL_FILM: _Profile(
        ("plastic shopping bag", "snack wrapper", "cling film", "bubble wrap"),
        "Shake out food residue and put it in the vinyl/film collection bag; heavily soiled film is general "
        "waste.",
        True,
    ),
    WasteCategory.STYROFOAM: _Profile(
        ("styrofoam packaging block", "foam takeaway tray", "foam cup"),
        "Remove tape and stickers, rinse off food, and bring it to the styrofoam collection; soiled foam is "
        "general waste.",
        True,
    ),
    WasteCategory.PAPER: _Profile(
        ("newspaper", "office paper", "paper bag", "magazine"),
        "Keep it dry, remove plastic windows and tape, and put it in the paper recycling bin.",
        True,
    ),
    WasteCategory.CARDBOARD: _Profile(
        ("corrugated cardboard box", "cereal box", "shipping carton"),
        "Remove tape and labels, flatten it, and tie it together for the paper and cardboard collection.",
        True,
    ),
    WasteCategory.GLASS: _Profile(
        ("glass bottle", "glass jar", "wine bottle"),
        "Empty and rinse, remove the cap, and put it in the glass collection; broken glass is wrapped as "
        "general waste.",
        True,
    ),
    WasteCategory.METAL_CAN: _Profile(
        ("aluminium drink can", "steel food can", "aerosol can (empty)"),
        "Empty and rinse, press aerosol cans empty, and put it in the metal can collection.",
        True,
    ),
    WasteCategory.FOOD_WASTE: _Profile(
        ("banana peel", "leftover rice", "vegetable scraps", "apple core"),
        "Drain liquids and put it in the food waste bin; bones, shells and pits go in general waste.",
        False,
    ),
    WasteCategory.TEXTILE: _Profile(
        ("cotton t-shirt", "pair of jeans", "wool sweater"),
        "If wearable, put it in a clothing collection box; worn-out or soiled textiles go in general waste.",
        False,
    ),
    WasteCategory.HAZARDOUS: _Profile(
        ("AA battery", "fluorescent lamp", "expired medicine", "paint can"),
        "Do not put it in household bins: take it to a hazardous waste drop-off, pharmacy or battery "
        "collection box.",
        False,
    ),
    WasteCategory.ELECTRONICS: _Profile(
        ("mobile phone", "phone charger", "small kitchen appliance", "laptop"),
        "Take it to an e-waste collection point or retailer take-back; remove batteries first if you can.",
        True,
    ),
    WasteCategory.GENERAL_WASTE: _Profile(
        ("used tissue", "disposable diaper", "ceramic shard", "cigarette butt"),
        "Put it in a general waste (pay-as-you-throw) bag.",
        False,
    ),
}

_CATEGORIES: tuple[WasteCategory, ...] = tuple(WasteCategory)

MIN_CONFIDENCE = 0.6
MAX_CONFIDENCE = 0.99


def classify(digest: str) -> WasteClassification:
    """The answer for an image with this sha256 hex digest. Different slices of the digest pick each part."""
    category = _CATEGORIES[int(digest[0:8], 16) % len(_CATEGORIES)]
    profile = _PROFILES[category]
    item = profile.items[int(digest[8:16], 16) % len(profile.items)]
    fraction = int(digest[16:24], 16) / 0xFFFFFFFF
    confidence = round(MIN_CONFIDENCE + fraction * (MAX_CONFIDENCE - MIN_CONFIDENCE), 3)
    return WasteClassification(
        category=category,
        item_name=item,
        disposal_instructions=profile.disposal_instructions,
        recyclable=profile.recyclable,
        confidence=confidence,
    )


def malformed_content(nth: int, digest: str) -> str:
    """A broken answer, alternating between the two ways a model breaks: not JSON, and JSON off the schema.

    ``nth`` counts malformed answers from 0: even ones are truncated JSON, odd ones parse but fail validation.
    """
    valid = classify(digest).model_dump(mode="json")
    if nth % 2 == 0:
        return json.dumps(valid)[:40]  # cut mid-object, as if the model ran out of tokens
    off_schema = {**valid, "category": "unknown_category", "confidence": 1.7, "notes": "extra field"}
    del off_schema["disposal_instructions"]
    return json.dumps(off_schema)
