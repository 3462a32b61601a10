"""The sandbox platform's fault knobs, defined once.

`Faults` is the definition: each field is a knob, and its metadata says what kind it is (a
probability, a non-negative amount, or the seed) and what it does. Everything else that
lists the knobs is derived from it: `KNOBS` and `DEFAULTS` here, the body of `PUT /faults`
and `POST /faults/reset` (sandbox/server.py), and the `publisher sandbox` flags (cli/main.py).

Light to import on purpose (the standard library only): every CLI call builds the parser.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Final, Literal

Kind = Literal["rate", "non_negative", "seed"]

_METAVARS: Final[dict[str, str]] = {"rate": "R", "non_negative": "X", "seed": "N"}


def _knob(default: float | None, kind: Kind, text: str) -> Any:
    return dataclasses.field(default=default, metadata={"kind": kind, "help": text})


@dataclass
class Faults:
    """Fault-injection knobs; every rate is an independent probability per request."""

    latency_ms: float = _knob(0.0, "non_negative", "delay every request by this many ms")
    latency_jitter_ms: float = _knob(
        0.0, "non_negative", "and by up to this many ms more, drawn per request"
    )
    rate_429: float = _knob(0.0, "rate", "probability a POST answers 429 with Retry-After")
    retry_after_s: float = _knob(1.0, "non_negative", "the Retry-After of those 429s, in s")
    rate_503: float = _knob(0.0, "rate", "probability a POST answers 503 (nothing is created)")
    rate_lost: float = _knob(
        0.0, "rate", "probability a new post is created but its caller gets a 502"
    )
    rate_400: float = _knob(0.0, "rate", "probability a new post is rejected with a 400")
    rate_lookup_503: float = _knob(
        0.0, "rate", "probability a lookup by key answers 503: the platform cannot say"
    )
    seed: int | None = _knob(
        None, "seed", "make each key's fault sequence reproducible (unset: random)"
    )

    def __post_init__(self) -> None:
        """Reject values that would make the simulation meaningless."""
        for knob in KNOBS:
            value = getattr(self, knob.name)
            if knob.kind == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError(f"{knob.name} must be an integer or null, got {value!r}")
                continue
            # Normalise ints (and numeric strings) so later float-only calls and the JSON
            # shape of GET /faults don't depend on how the caller spelled the number.
            value = float(value)
            setattr(self, knob.name, value)
            # Written as positive range checks so that NaN fails them too.
            if knob.kind == "rate" and not 0.0 <= value <= 1.0:
                raise ValueError(f"{knob.name} must be between 0 and 1, got {value!r}")
            if knob.kind == "non_negative" and not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{knob.name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Knob:
    """One field of `Faults`, as the API, the CLI and the harness see it."""

    name: str
    kind: Kind
    default: float | int | None
    help: str

    @property
    def flag(self) -> str:
        """The `publisher sandbox` option: `--rate-429` for `rate_429`."""
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> type[float] | type[int]:
        """What a value of the knob is (the seed may also be None)."""
        return int if self.kind == "seed" else float

    @property
    def metavar(self) -> str:
        return _METAVARS[self.kind]


def _knob_of(f: dataclasses.Field[Any]) -> Knob:
    if f.default is dataclasses.MISSING:
        # With no flags the sandbox must run, fault-free: every knob has a default.
        raise TypeError(f"fault knob {f.name} has no default")
    return Knob(f.name, f.metadata["kind"], f.default, f.metadata["help"])


KNOBS: Final[tuple[Knob, ...]] = tuple(_knob_of(f) for f in dataclasses.fields(Faults))
# What `POST /faults/reset` restores, and what a fresh `Faults()` holds.
DEFAULTS: Final[dict[str, float | int | None]] = {knob.name: knob.default for knob in KNOBS}
