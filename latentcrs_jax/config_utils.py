"""Turning `ml_collections` config sections into the typed dataclasses the library takes."""

import dataclasses
from typing import Any


def section_values(cls: type, section: Any, name: str) -> dict[str, Any]:
    """The fields of `section` as a dict, after checking each one is a field of `cls`.

    Args:
      cls: the dataclass the section configures.
      section: a ConfigDict (or mapping) such as `config.em`.
      name: the section's name, for the error message.

    Raises:
      ValueError: naming the unknown fields (a typo in a config or an override).
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(section)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown config.{name} fields: {unknown}")
    return values
