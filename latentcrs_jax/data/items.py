"""The item attribute record shared by every reader, the simulator and the encoder.

An item is a plain dict (JSON-serialisable) with a fixed set of keys:
  raw_id: str, title: str, year: int | None, genres: list[str], tags: list[str],
  categories: list[str], description: str, features: list[str], text: str.
`text` is the item text the encoder embeds, rendered from the other fields.
"""

import re
from typing import Any

ITEM_KEYS = (
    "raw_id",
    "title",
    "year",
    "genres",
    "tags",
    "categories",
    "description",
    "features",
    "text",
)

_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$")


def split_title_year(title: str) -> tuple[str, int | None]:
    """Splits a MovieLens title "Name (YYYY)" into ("Name", YYYY); no year gives None."""
    title = title.strip()
    match = _YEAR_SUFFIX.search(title)
    if match is None:
        return title, None
    return title[: match.start()].strip(), int(match.group(1))


def render_text(item: dict[str, Any]) -> str:
    """Renders the item text that the encoder embeds, from the item's attributes."""
    parts = [item["title"] + (f" ({item['year']})" if item.get("year") else "")]
    if item.get("genres"):
        parts.append("Genres: " + ", ".join(item["genres"]))
    if item.get("categories"):
        parts.append("Categories: " + ", ".join(item["categories"]))
    if item.get("tags"):
        parts.append("Tags: " + ", ".join(item["tags"]))
    if item.get("features"):
        parts.append("Features: " + ", ".join(item["features"]))
    if item.get("description"):
        parts.append(item["description"])
    return ". ".join(p.rstrip(".") for p in parts) + "."


def make_item(
    raw_id: str,
    title: str,
    *,
    year: int | None = None,
    genres: list[str] | None = None,
    tags: list[str] | None = None,
    categories: list[str] | None = None,
    description: str = "",
    features: list[str] | None = None,
) -> dict[str, Any]:
    """Builds an item record with every key present and `text` rendered."""
    item = {
        "raw_id": str(raw_id),
        "title": title.strip(),
        "year": year,
        "genres": list(genres or []),
        "tags": list(tags or []),
        "categories": list(categories or []),
        "description": description.strip(),
        "features": list(features or []),
    }
    item["text"] = render_text(item)
    return item


def pad_item() -> dict[str, Any]:
    """The placeholder record stored at index 0 (PAD)."""
    item = make_item("", "")
    item["text"] = ""
    return item


def has_text_beyond_title(item: dict[str, Any]) -> bool:
    """True if the item has any attribute besides its title (genres, tags, description...)."""
    return any(item.get(k) for k in ("genres", "tags", "categories", "description", "features"))
