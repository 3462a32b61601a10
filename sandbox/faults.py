"""The sandbox platform's fault knobs, defined once.

`Faults` is the definition: each field is a knob, and its metadata says what kind it is (a
probability, a non-negative amount, a count, one of a few choices, or the seed) and what it
does. Everything else that lists the knobs is derived from it: `KNOBS` and `DEFAULTS` here,
the body of `PUT /faults` and `POST /faults/reset` (sandbox/server.py), and the
`publisher sandbox` flags (`add_knob_flags`, used by cli/main.py). The Instagram and TikTok
emulators' knobs (sandbox/instagram_faults.py, sandbox/tiktok_faults.py) are other such
dataclasses, derived the same way.

Light to import on purpose (the standard library only): every CLI call builds the parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

# A `switch` is on or off (True or False); on the command line, true/false (or 1/0, yes/no).
Kind = Literal["rate", "non_negative", "count", "choice", "seed", "switch"]

_METAVARS: Final[dict[str, str]] = {
    "rate": "R",
    "non_negative": "X",
    "count": "N",
    "seed": "N",
    "switch": "BOOL",
}
_SWITCH_WORDS: Final[dict[str, bool]] = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def knob(default: Any, kind: Kind, text: str, choices: tuple[Any, ...] = ()) -> Any:
    """A dataclass field that is a fault knob: its default, kind and help text (and, for a
    `choice`, the values it may take)."""
    if (kind == "choice") != bool(choices):
        raise TypeError("a choice knob, and only a choice knob, lists its choices")
    return dataclasses.field(
        default=default, metadata={"kind": kind, "help": text, "choices": choices}
    )


@dataclass
class Faults:
    """Fault-injection knobs; every rate is an independent probability per request."""

    latency_ms: float = knob(0.0, "non_negative", "delay every request by this many ms")
    latency_jitter_ms: float = knob(
        0.0, "non_negative", "and by up to this many ms more, drawn per request"
    )
    rate_429: float = knob(0.0, "rate", "probability a POST answers 429 with Retry-After")
    retry_after_s: float = knob(1.0, "non_negative", "the Retry-After of those 429s, in s")
    rate_503: float = knob(0.0, "rate", "probability a POST answers 503 (nothing is created)")
    rate_lost: float = knob(
        0.0, "rate", "probability a new post is created but its caller gets a 502"
    )
    rate_400: float = knob(0.0, "rate", "probability a new post is rejected with a 400")
    rate_lookup_503: float = knob(
        0.0, "rate", "probability a lookup by key answers 503: the platform cannot say"
    )
    down: bool = knob(
        False,
        "switch",
        "the whole platform is down: every platform call answers 503 from the edge and does"
        " nothing (health, ledger and fault routes still answer)",
    )
    seed: int | None = knob(
        None, "seed", "make each key's fault sequence reproducible (unset: random)"
    )

    def __post_init__(self) -> None:
        """Reject values that would make the simulation meaningless."""
        check_knobs(self)


@dataclass(frozen=True)
class Knob:
    """One field of a knobs dataclass, as the API, the CLI and the harness see it."""

    name: str
    kind: Kind
    default: float | int | str | None
    help: str
    choices: tuple[Any, ...] = ()

    @property
    def flag(self) -> str:
        """The command-line option: `--rate-429` for `rate_429`."""
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> type[Any]:
        """What a value of the knob is (the seed may also be None)."""
        if self.kind == "choice":
            return type(self.choices[0])
        if self.kind == "switch":
            return bool
        return int if self.kind in ("seed", "count") else float

    @property
    def metavar(self) -> str | None:
        """None for a choice: argparse then shows the choices."""
        return _METAVARS.get(self.kind)


def _knob_of(f: dataclasses.Field[Any]) -> Knob:
    if f.default is dataclasses.MISSING:
        # With no flags the server must run, fault-free: every knob has a default.
        raise TypeError(f"fault knob {f.name} has no default")
    return Knob(f.name, f.metadata["kind"], f.default, f.metadata["help"], f.metadata["choices"])


def knobs_of(cls: type[Any]) -> tuple[Knob, ...]:
    """The knobs of a dataclass whose fields are all made with `knob`."""
    return tuple(_knob_of(f) for f in dataclasses.fields(cls))


def defaults_of(cls: type[Any]) -> dict[str, Any]:
    """What a fresh `cls()` holds, and what `POST /faults/reset` restores."""
    return {k.name: k.default for k in knobs_of(cls)}


def _checked(k: Knob, value: Any) -> Any:
    """The value normalised to the knob's type, or ValueError."""
    if k.kind == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{k.name} must be an integer or null, got {value!r}")
        return value
    if k.kind == "switch":
        # Only a real bool: 1 or "yes" in PUT /faults is a mistake, not a yes.
        if not isinstance(value, bool):
            raise ValueError(f"{k.name} must be true or false, got {value!r}")
        return value
    if k.kind == "choice":
        # `in` alone would let True stand for 1 and 4.0 for 4.
        if not any(type(c) is type(value) and c == value for c in k.choices):
            raise ValueError(f"{k.name} must be one of {list(k.choices)}, got {value!r}")
        return value
    if k.kind == "count":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{k.name} must be a whole number >= 0, got {value!r}")
        try:
            count = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{k.name} must be a whole number >= 0, got {value!r}") from None
        if count < 0:
            raise ValueError(f"{k.name} must be a whole number >= 0, got {value!r}")
        return count
    # Normalise ints (and numeric strings) so later float-only calls and the JSON
    # shape of GET /faults don't depend on how the caller spelled the number.
    number = float(value)
    # Written as positive range checks so that NaN fails them too.
    if k.kind == "rate" and not 0.0 <= number <= 1.0:
        raise ValueError(f"{k.name} must be between 0 and 1, got {number!r}")
    if k.kind == "non_negative" and not (math.isfinite(number) and number >= 0.0):
        raise ValueError(f"{k.name} must be a finite number >= 0, got {number!r}")
    return number


def check_knobs(instance: Any) -> None:
    """Validate and normalise every knob of a knobs dataclass, in place (its __post_init__)."""
    for k in knobs_of(type(instance)):
        setattr(instance, k.name, _checked(k, getattr(instance, k.name)))


def parse_switch(text: str) -> bool:
    """A switch's value on the command line: true/false, 1/0, yes/no or on/off."""
    try:
        return _SWITCH_WORDS[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def add_knob_flags(parser: argparse.ArgumentParser, knobs: Iterable[Knob]) -> None:
    """One command-line flag per knob, with its default and help."""
    for k in knobs:
        parser.add_argument(
            k.flag,
            type=parse_switch if k.kind == "switch" else k.type,
            default=k.default,
            metavar=k.metavar,
            choices=k.choices or None,
            help=k.help,
        )


KNOBS: Final[tuple[Knob, ...]] = knobs_of(Faults)
# What `POST /faults/reset` restores, and what a fresh `Faults()` holds.
DEFAULTS: Final[dict[str, float | int | None]] = defaults_of(Faults)
