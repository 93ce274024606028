"""The alert rules' configuration: the defaults in :data:`controlplane.alerts.rules.RULES`, and
the optional alerts file (setting ``alerts_file``) with overrides per selection of devices.

The file is JSON or TOML (by its extension) holding one key, ``overrides``: a list of
``{rule, select, threshold, for_s, severity, enabled, min_count, min_free_bytes}`` where only
``rule`` is required. ``select`` is a set of tags (``{"site": "north"}``); no ``select`` means
every device. For a device, the overrides of a rule whose selection it matches apply from the
least specific (fewest tags) to the most specific, later ones in the file after earlier ones of
the same specificity, each setting only the fields it names: the most specific wins.

Unknown keys, unknown rules, a field the rule does not take and bad values are refused at start
(:class:`ConfigError` naming the entry and the key), never left as silent defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6 on Jetson)
    import tomli as tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controlplane.alerts.rules import RULES, Params, Severity
from controlplane.errors import ConfigError
from controlplane.rollouts.spec import selector_matches

TAG = r"^[A-Za-z0-9_.-]{1,64}$"


class Override(BaseModel):
    """One entry of the alerts file's ``overrides``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    select: dict[str, str] = Field(default_factory=dict)
    threshold: float | None = None
    for_s: float | None = Field(None, ge=0)
    severity: Severity | None = None
    enabled: bool | None = None
    min_count: int | None = Field(None, ge=0)
    min_free_bytes: int | None = Field(None, ge=0)

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        if value not in RULES:
            close = difflib.get_close_matches(value, list(RULES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown rule {value!r}{hint}; rules: {', '.join(RULES)}")
        return value

    @field_validator("select")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if not re.fullmatch(TAG, key) or not re.fullmatch(TAG, tag):
                raise ValueError(f"{key}={tag!r}: tags are 1 to 64 of A-Z a-z 0-9 _ . -")
        return value

    @field_validator("threshold", "for_s")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value

    @model_validator(mode="after")
    def _applies(self) -> Override:
        spec = RULES.get(self.rule)
        if spec is None:
            return self
        if self.threshold is not None and spec.defaults.threshold is None:
            raise ValueError(f"{self.rule} has no threshold (it fires on any occurrence)")
        for extra in ("min_count", "min_free_bytes"):
            if getattr(self, extra) is not None and extra not in spec.takes:
                takers = [r.name for r in RULES.values() if extra in r.takes]
                raise ValueError(f"{extra} applies to {', '.join(takers)} only, not {self.rule}")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields this override sets."""
        keys = ("threshold", "for_s", "severity", "enabled", "min_count", "min_free_bytes")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class AlertsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    overrides: list[Override] = Field(default_factory=list)


Effective = dict[str, Params]  # rule name -> its parameters for one device


@dataclass(frozen=True)
class AlertConfig:
    """The defaults with the file's overrides; :meth:`resolver` gives each device's rules."""

    overrides: tuple[Override, ...] = ()
    source: str | None = None  # the file's path, when there is one

    def params(self, rule: str, tags: Mapping[str, str]) -> Params:
        """The parameters of ``rule`` for a device with ``tags``."""
        params = RULES[rule].defaults
        matching = [
            o for o in self.overrides if o.rule == rule and selector_matches(o.select, tags)
        ]
        for override in sorted(matching, key=lambda o: len(o.select)):  # stable: file order
            params = dataclasses.replace(params, **override.changes())
        return params

    def effective(self, tags: Mapping[str, str]) -> Effective:
        return {rule: self.params(rule, tags) for rule in RULES}

    def resolver(self) -> Callable[[Mapping[str, str]], Effective]:
        """``effective`` memoised on the tags any override selects on (devices share them)."""
        keys = sorted({k for o in self.overrides for k in o.select})
        cache: dict[tuple[str | None, ...], Effective] = {}

        def resolve(tags: Mapping[str, str]) -> Effective:
            key = tuple([tags.get(k) for k in keys])
            found = cache.get(key)
            if found is None:
                found = cache[key] = self.effective({k: v for k, v in tags.items() if k in keys})
            return found

        return resolve

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/v1/alerts/rules`` shows: each rule's defaults and the overrides."""
        return {
            "file": self.source,
            "rules": [
                {"rule": s.name, "summary": s.summary, "unit": s.unit, **s.defaults.as_dict()}
                for s in RULES.values()
            ],
            "overrides": [o.model_dump(exclude_none=True) for o in self.overrides],
        }


def load_alert_config(path: Path | None) -> AlertConfig:
    """The configuration from the alerts file (None: the defaults); ConfigError naming the
    problem (the file, the entry, the key)."""
    if path is None:
        return AlertConfig()
    data = _read(path)
    try:
        parsed = AlertsFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"alerts file {path}: {problems}") from None
    return AlertConfig(tuple(parsed.overrides), str(path))


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(f"alerts file {path}: expected a .json or .toml file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the alerts file {path}: {exc.strerror}") from None
    try:
        return json.loads(raw) if suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, TOMLDecodeError
        kind = "JSON" if suffix == ".json" else "TOML"
        raise ConfigError(f"alerts file {path} is not valid {kind}: {exc}") from None


_OVERRIDE_KEYS = list(Override.model_fields)


def _describe(error: Any) -> str:
    loc = [str(p) for p in error["loc"]]
    where = loc[0] if loc else "(root)"
    for part in loc[1:]:
        where += f"[{part}]" if part.isdigit() else f".{part}"
    if error["type"] == "extra_forbidden":
        choices = _OVERRIDE_KEYS if len(loc) > 2 else ["overrides"]
        close = difflib.get_close_matches(loc[-1], choices, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        return f"unknown key `{where}`{hint}; an override takes: {', '.join(_OVERRIDE_KEYS)}"
    if error["type"] == "missing":
        return f"`{where}` is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"invalid `{where}`: {message}"
