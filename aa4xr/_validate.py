"""Checks of user arguments, and warnings that point at the user's line.

Each check raises an error naming the argument, its value and what is
expected; they run before any file is read, so a wrong argument costs
nothing. :func:`warn_user` gives a warning the ``stacklevel`` of the first
caller outside aa4xr, however deep inside aa4xr it is raised.

>>> check_choices("song", "stim_types", ("song", "call"))
['song']
>>> check_count(None, "processes") is None
True
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from collections.abc import Iterable

#: Frames from files under this folder are aa4xr's own; warnings point past them.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with the ``stacklevel`` of the first caller outside aa4xr (the user's line).

    A fixed ``stacklevel`` is right for one call depth only; aa4xr's functions
    call each other, so the level is counted here instead. xarray's frames are
    passed over too, for ``xr.open_dataset(root, engine="aa4")``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_user("stimulus 1: no sound file")
    >>> caught[0].filename.startswith(_PACKAGE_DIR)
    False
    """
    xarray = sys.modules.get("xarray")
    inside = (_PACKAGE_DIR, os.path.dirname(xarray.__file__) + os.sep) if xarray else (_PACKAGE_DIR,)
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _is_real(value) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` to Python, never a width or size)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_choices(value: Iterable[str] | str | None, name: str, allowed: tuple[str, ...]) -> list[str] | None:
    """``value`` (one string or several) as a list, each checked against ``allowed``; None stays None.

    None means "all"; an empty list is refused rather than read as "all" or "none".

    Raises
    ------
    ValueError
        For an empty list or a value outside ``allowed``, naming ``name``.

    Examples
    --------
    >>> check_choices(["song", "call"], "stim_types", ("song", "call", "mlnoise"))
    ['song', 'call']
    >>> check_choices([], "stim_types", ("song",))
    Traceback (most recent call last):
    ...
    ValueError: stim_types=[] selects nothing: give any of ['song'], or None for all
    """
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise ValueError(f"{name}=[] selects nothing: give any of {list(allowed)}, or None for all")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {name} {unknown}; expected any of {list(allowed)}")
    return values


def check_names(value: Iterable[str] | str | None, name: str) -> list[str] | None:
    """``value`` (one string or several strings) as a list; None stays None; empty is refused.

    Examples
    --------
    >>> check_names("LblBlu2028M", "animals")
    ['LblBlu2028M']
    >>> check_names([], "animals")
    Traceback (most recent call last):
    ...
    ValueError: animals=[] selects nothing: give one or more names, or None for all
    """
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise ValueError(f"{name}=[] selects nothing: give one or more names, or None for all")
    wrong = [v for v in values if not isinstance(v, str)]
    if wrong:
        raise TypeError(f"{name}: expected names (str), got {wrong!r}")
    return values


def check_seconds(value, name: str, *, positive: bool = False) -> float:
    """``value`` as a float, checked to be a finite number of seconds (> 0 if ``positive``, else >= 0).

    Strings such as ``"0.005"`` or ``"5ms"`` are refused: give seconds as a number.

    Examples
    --------
    >>> check_seconds(0.005, "dt", positive=True)
    0.005
    >>> check_seconds("5ms", "dt", positive=True)
    Traceback (most recent call last):
    ...
    TypeError: dt='5ms': expected a number of seconds (e.g. 0.005), not a str
    """
    if not _is_real(value):
        raise TypeError(f"{name}={value!r}: expected a number of seconds (e.g. 0.005), "
                        f"not a {type(value).__name__}")
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name}={value!r}: expected a finite number of seconds "
                         f"{'> 0' if positive else '>= 0'}")
    return float(value)


def check_grid(dt, pre, post) -> None:
    """Check the bin width ``dt`` (> 0) and the margins ``pre`` and ``post`` (>= 0), in seconds.

    Examples
    --------
    >>> check_grid(0.005, 0.1, 0.0)
    >>> check_grid(0.0, 0.1, 0.0)
    Traceback (most recent call last):
    ...
    ValueError: dt=0.0: expected a finite number of seconds > 0
    """
    check_seconds(dt, "dt", positive=True)
    check_seconds(pre, "pre")
    check_seconds(post, "post")


def check_size_mb(value, name: str) -> float:
    """``value`` as a float, checked to be a finite, positive number of megabytes.

    Examples
    --------
    >>> check_size_mb(8, "chunk_mb")
    8.0
    >>> check_size_mb(float("nan"), "chunk_mb")
    Traceback (most recent call last):
    ...
    ValueError: chunk_mb=nan: expected a finite number of megabytes > 0
    """
    if not _is_real(value):
        raise TypeError(f"{name}={value!r}: expected a number of megabytes, not a {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r}: expected a finite number of megabytes > 0")
    return float(value)


def check_count(value, name: str) -> int | None:
    """``value`` checked to be None or a whole number >= 1 (e.g. worker processes).

    Examples
    --------
    >>> check_count(2, "processes")
    2
    >>> check_count(2.5, "processes")
    Traceback (most recent call last):
    ...
    TypeError: processes=2.5: expected a whole number >= 1 (or None for the default), not a float
    """
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name}={value!r}: expected a whole number >= 1 (or None for the default), "
                        f"not a {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}={value!r}: expected a whole number >= 1 (or None for the default)")
    return int(value)
