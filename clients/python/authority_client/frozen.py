"""Read-only JSON values, for the ``extra`` of verified claims.

A token's verified claims are remembered and handed to every call that presents it (the
local mode's verified tokens, the remote mode's claims cache), so no call's code may change
them for the calls after it. The values stay a ``dict`` and a ``list``, so ``json.dumps``,
``isinstance`` and ``==`` treat them as before; a change raises ``TypeError``, and a copy
(``dict(extra)``, ``copy.deepcopy(extra)``) is an ordinary, changeable one.
"""

from __future__ import annotations

from typing import Any, NoReturn

_REFUSAL = "verified claims are shared by every call with the token and are read-only; change a copy"


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(_REFUSAL)


class FrozenDict(dict[str, Any]):
    """A JSON object that refuses change."""

    __slots__ = ()

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        # copy, deepcopy and pickle make an ordinary dict, which they then may fill.
        return dict, (dict(self),)


class FrozenList(list[Any]):
    """A JSON array that refuses change."""

    __slots__ = ()

    __setitem__ = __delitem__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return list, (list(self),)


def frozen(value: Any) -> Any:
    """``value`` with every object and array in it read-only, as a copy; other values as they are."""
    if isinstance(value, dict):
        return FrozenDict({name: frozen(item) for name, item in value.items()})
    if isinstance(value, list):
        return FrozenList([frozen(item) for item in value])
    return value
