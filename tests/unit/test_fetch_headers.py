"""X-Cache parsing: CloudFront's and the local edge's forms both count."""

from __future__ import annotations

import pytest

from streams.fetch import cdn_url, parse_cdn_cache


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Hit from cloudfront", "hit"),
        ("RefreshHit from cloudfront", "hit"),
        ("Miss from cloudfront", "miss"),
        ("HIT", "hit"),
        ("MISS", "miss"),
        (None, "unknown"),
        ("Error from cloudfront", "unknown"),
    ],
)
def test_x_cache_parsing(value: str | None, expected: str) -> None:
    headers = {} if value is None else {"X-Cache": value}
    assert parse_cdn_cache(headers) == expected


def test_cdn_url_quotes_the_key_but_keeps_slashes(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(cdn_base_url="https://images.example.test/")
    assert cdn_url(settings, "uploads/a b.jpg") == "https://images.example.test/uploads/a%20b.jpg"
