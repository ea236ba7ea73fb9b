"""The values behind `!secret` and `!vault`: kept apart so that every module can use them."""

from __future__ import annotations

from dataclasses import dataclass, field

MASK = "********"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """What the loader makes of `!secret NAME`: a name still to be resolved."""

    name: str


@dataclass(frozen=True, slots=True)
class VaultText:
    """An inline `!vault |` value in the secrets file, still encrypted."""

    ciphertext: str


@dataclass(frozen=True, slots=True)
class SecretValue:
    name: str
    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"SecretValue({self.name!r}, {MASK})"
