"""The pHash evaluation's arithmetic, on hand-made hashes (no images needed)."""

from __future__ import annotations

from pathlib import Path

from tools.evaluate_phash import Item, evaluate, render


def h(bits: list[int]) -> str:
    value = 0
    for b in bits:
        value |= 1 << b
    return f"{value:064x}"


def items() -> list[Item]:
    # Item a: reference + one file 2 bits away + one 6 bits away. Item b: reference + one file 4 bits away.
    # a and b are 100+ bits apart, except a's 6-bit file, which is 20 bits from b's reference.
    a_ref = h([])
    b_ref = h(list(range(200, 220)))
    return [
        Item("a", [Path("original.jpg"), Path("q70.jpg"), Path("crop5.jpg")],
             [a_ref, h([0, 1]), h([0, 1, 2, 3, 4, 5])]),
        Item("b", [Path("original.jpg"), Path("q70.jpg")], [b_ref, h([*range(200, 220), 250, 251, 252, 253])]),
    ]


def test_recall_and_false_matches_per_threshold() -> None:
    report = evaluate(items(), max_t=64)
    rows = {r["t"]: r for r in report["thresholds"]}
    # Same-item pairs: a: (ref,q70)=2 (ref,crop)=6 (q70,crop)=4; b: (ref,q70)=4.
    assert report["same_item_pairs"] == 4 and report["different_item_pairs"] == 6
    assert rows[0]["recall_pairs"] == 0 and rows[2]["recall_pairs"] == 0.25
    assert rows[4]["recall_pairs"] == 0.75 and rows[6]["recall_pairs"] == 1.0
    # Against the reference only: 2, 6 (item a) and 4 (item b).
    assert rows[4]["recall_vs_reference"] == round(2 / 3, 4)
    assert report["closest_different_items"] == 20 and report["farthest_same_item"] == 6
    assert rows[19]["false_matches"] == 0 and rows[20]["false_matches"] == 1
    assert report["per_name_vs_reference"]["crop5.jpg"]["max"] == 6
    assert report["per_name_vs_reference"]["q70.jpg"]["recall"]["2"] == 0.5
    assert sum(report["histogram"]["same"].values()) == 4


def test_render_prints_every_threshold_and_the_histogram() -> None:
    text = render(evaluate(items(), max_t=64))
    assert "  64 " in text and "distance histogram" in text and "crop5.jpg" in text
