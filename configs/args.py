"""The `key=value,key=value` config argument (`--config configs/NAME.py:ARG`), parsed once for
every config that takes one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def parse(
    arg: str | None,
    defaults: Mapping[str, str],
    *,
    required: Sequence[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """'init=/tmp/run,mode=single' -> {'init': '/tmp/run', 'mode': 'single', ...}: `defaults`
    with the given values; an unknown key, an item without '=', a missing `required` key or a
    value outside `choices` is a ValueError that lists what the config takes."""
    values = dict(defaults)
    expected = ', '.join(f'{key}=...' for key in values)
    for item in filter(None, (arg or '').split(',')):
        key, sep, value = item.partition('=')
        if not sep or key not in values:
            raise ValueError(f'config argument {item!r}: expected {expected}, separated by commas')
        values[key] = value
    for key in required:
        if not values[key]:
            raise ValueError(f'config argument {arg!r}: {key}=... is required ({expected})')
    for key, allowed in (choices or {}).items():
        if values[key] not in allowed:
            raise ValueError(
                f'config argument {key}={values[key]!r}; expected one of {tuple(allowed)}'
            )
    return values
