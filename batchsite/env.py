"""Read settings from environment variables, each bad value one clear line.

A variable that is unset or blank takes the default; one that does not parse raises
ImproperlyConfigured naming the variable and the value, so a deployment fails at start-up
saying what to fix.
"""

import os

from django.core.exceptions import ImproperlyConfigured


def env_bool(name: str, default: bool = False) -> bool:
    """Read a yes/no environment variable, failing clearly on anything else."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0, true/false, yes/no or on/off, not {value!r}")


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Read an integer environment variable, failing clearly on garbage or one out of bounds."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from exc
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(
            f"{name} must be an integer of at least {minimum}, not {value!r}"
        )
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be an integer of at most {maximum}, not {value!r}")
    return number


def env_float(name: str, default: float) -> float:
    """Read a number environment variable, failing clearly on garbage."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}")
    return number


def env_choice(name: str, choices: tuple[str, ...]) -> str:
    """Read one of a few words (any case), failing clearly on another; unset: the first."""
    value = os.environ.get(name, "")
    word = value.strip().lower()
    if not word:
        return choices[0]
    if word not in choices:
        names = " or ".join(repr(choice) for choice in choices)
        raise ImproperlyConfigured(f"{name} must be {names}, not {value!r}")
    return word


def env_list(name: str, default: str = "") -> list[str]:
    """Read a comma-separated environment variable."""
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


def env_port_list(name: str) -> list[int]:
    """Read a comma-separated list of TCP ports, failing clearly on garbage."""
    ports = []
    for part in env_list(name):
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise ImproperlyConfigured(f"{name} must be a comma list of ports, not {part!r} in it")
        ports.append(int(part))
    return ports


def env_senders(name: str) -> list[str]:
    """Read a comma list of mail addresses and @domains, failing clearly on anything else."""
    found = []
    for entry in env_list(name):
        local, at, domain = entry.rpartition("@")
        if not at or not domain or "@" in local or any(c in entry for c in " <>\"'"):
            raise ImproperlyConfigured(
                f"{name} must be a comma list of addresses (shop@example.com) and domains "
                f"(@example.com), not {entry!r} in it"
            )
        found.append(entry)
    return found


def env_int_map(name: str, default: str) -> dict[int, str]:
    """Read a comma-separated list of INTEGER=NAME pairs, failing clearly on garbage."""
    found: dict[int, str] = {}
    for pair in env_list(name, default):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isdigit() or not value.strip():
            raise ImproperlyConfigured(
                f"{name} must be a comma list of INTEGER=NAME pairs, not {pair!r} in it"
            )
        found[int(key)] = value.strip()
    return found
