"""Where settings come from: ``AUTHORITY_*`` variables and flags, and what each option is set to.

This is the only module that reads the environment. :func:`load_settings` turns the text
of variables and flags into :class:`~authority.config.settings.Settings`; a flag and its
variable are parsed and checked the same way. :func:`sources`, :func:`describe` and
:func:`unknown_variables` are what ``authority config`` shows: where each value came
from, every value with secrets masked, and the variables nothing reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
from collections.abc import Mapping
from typing import Any

from authority.config.settings import Algorithm, Policy, Settings
from authority.config.values import DURATION_OPTIONS, MASK, duration_text, mask_url, parse_duration, parse_seconds
from authority.errors import ConfigError

ENV_PREFIX = "AUTHORITY_"

# The project's documented variables that are not settings: the admin commands' target,
# API key and TLS options (also the demo's; authority/cli/connection.py), and the tests'
# PostgreSQL. Every Settings field is known
# as AUTHORITY_<FIELD>; anything else with the prefix is reported as a likely typo.
OTHER_VARIABLES = frozenset({
    "AUTHORITY_TARGET", "AUTHORITY_API_KEY", "AUTHORITY_TLS", "AUTHORITY_TLS_CA_FILE", "AUTHORITY_TLS_CLIENT_CERT_FILE",
    "AUTHORITY_TLS_CLIENT_KEY_FILE", "AUTHORITY_TLS_SERVER_NAME", "AUTHORITY_TEST_POSTGRES_URL",
})


def _parse(field: dataclasses.Field[Any], text: str) -> Any:
    option = field.name
    if field.type == "float":
        return parse_seconds(option, text)
    if field.type == "int":
        if option == "workers" and text.strip().lower() == "auto":
            return os.cpu_count() or 1
        if option in DURATION_OPTIONS:
            return parse_duration(option, text)
        try:
            return int(text)
        except ValueError:
            raise ConfigError(option, f"{text!r} is not a whole number") from None
    if field.type == "bool":
        if text.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if text.strip().lower() in ("", "0", "false", "no", "off"):
            return False
        raise ConfigError(option, f"{text!r} is not true or false")
    if field.type == "tuple[str, ...]":
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if field.type == "Policy":
        try:
            return Policy(text.lower())
        except ValueError:
            raise ConfigError(option, f"{text!r} is not one of {', '.join(p.value for p in Policy)}") from None
    if field.type == "Algorithm":
        by_name = {a.value.lower(): a for a in Algorithm}
        if text.lower() not in by_name:
            raise ConfigError(option, f"{text!r} is not one of {', '.join(a.value for a in Algorithm)}")
        return by_name[text.lower()]
    return text


def load_settings(environ: Mapping[str, str] | None = None, **overrides: str | None) -> Settings:
    """Settings from ``AUTHORITY_<OPTION>`` variables, then command-line overrides.

    Overrides are the text of flags as given (``None`` means the flag was not given),
    so a flag and its environment variable are parsed and checked the same way.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        text = overrides.get(field.name)
        if text is None:
            text = environ.get(ENV_PREFIX + field.name.upper())
        if text is not None:
            values[field.name] = _parse(field, text)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "is not an option")
    return Settings(**values)


def known_variables() -> frozenset[str]:
    """Every ``AUTHORITY_*`` variable the project reads."""
    return frozenset(ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)) | OTHER_VARIABLES


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning for each ``AUTHORITY_*`` variable that nothing reads, naming the closest
    known one: a typo (``AUTHORITY_MAX_SESSION_PER_SUBJECT``) must not go unnoticed."""
    environ = os.environ if environ is None else environ
    known = sorted(known_variables())
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {closest[0]}?" if closest else ""
        warnings.append(f"{name} is not a setting of the authority and is ignored{hint}")
    return warnings


def sources(environ: Mapping[str, str] | None = None, **overrides: str | None) -> dict[str, str]:
    """Where each option's value comes from: ``flag``, ``env`` or ``default``."""
    environ = os.environ if environ is None else environ
    return {
        field.name: "flag" if overrides.get(field.name) is not None
        else "env" if ENV_PREFIX + field.name.upper() in environ
        else "default"
        for field in dataclasses.fields(Settings)
    }


# Options whose value is a secret (or, for api_keys, better not shown); `authority config`
# masks them. Paths to files that hold secrets are shown: they say where, not what.
_SECRET_OPTIONS = frozenset({"key_encryption_key", "api_keys"})


def describe(settings: Settings) -> dict[str, str]:
    """Every option's effective value as text, in declaration order, secrets masked."""
    shown: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in DURATION_OPTIONS or field.type == "float":
            text = duration_text(value)
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, enum.Enum):
            text = str(value.value)
        else:
            text = str(value)
        if field.name in ("database_url", "listen_database_url"):
            text = mask_url(text)
        elif text and field.name in _SECRET_OPTIONS:
            text = MASK
        shown[field.name] = text
    return shown
