"""The node's settings: one :class:`NodeConfig`, from command-line values and/or a JSON file.

The JSON file (``--config FILE``) holds the same keys as the options, with underscores::

    {"ae_title": "SPINEFX", "port": 11112, "host": "0.0.0.0", "data": "/var/lib/spinefx",
     "dest": "PACS@10.0.0.5:104", "allow": ["SCANNER1", "SCANNER2"], "idle_seconds": 10}

A value given on the command line wins over the file's. Relative paths in the file are read
from the file's folder. Every problem is a :class:`~spinefx.runtime.errors.ConfigError` naming
the key (and the file) and what is wrong.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from spinefx.runtime.errors import ConfigError

__all__ = ["DEFAULT_HOST", "Destination", "NodeConfig", "check_ae_title", "parse_dest"]

#: Listen on loopback unless told otherwise: a node that accepts PHI from the whole network
#: should be a deliberate choice (``--host 0.0.0.0``), made together with ``--allow``.
DEFAULT_HOST = "127.0.0.1"


def check_ae_title(value: object, key: str) -> str:
    """An AE title: 1-16 characters of printable ASCII, no backslash, not only spaces."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected an AE title (text), got {type(value).__name__}")
    title = value.strip()
    if not 1 <= len(title) <= 16:
        raise ConfigError(f"{key}: an AE title has 1 to 16 characters, got {value!r}")
    if "\\" in title or not all(32 <= ord(c) < 127 for c in title):
        raise ConfigError(f"{key}: an AE title is printable ASCII without '\\', got {value!r}")
    return title


def _port(value: object, key: str, allow_zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{key}: expected a port number, got {value!r}")
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a port number, got {value!r}") from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(f"{key}: a port is within {low}..65535, got {port}")
    return port


@dataclass(frozen=True)
class Destination:
    """Where results go: the PACS (or any Storage SCP) as AE title, host and port."""
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_dest(value: object, key: str = "dest") -> Destination:
    """``AET@HOST:PORT`` (or a JSON object with ae_title, host, port) -> :class:`Destination`."""
    if isinstance(value, Mapping):
        missing = {"ae_title", "host", "port"} - set(value)
        if missing:
            raise ConfigError(f"{key}: missing {', '.join(sorted(missing))}")
        aet, host, port = value["ae_title"], value["host"], value["port"]
    elif isinstance(value, str) and "@" in value and ":" in value.rpartition("@")[2]:
        aet, _, address = value.rpartition("@")
        host, _, port = address.rpartition(":")
    else:
        raise ConfigError(f"{key}: expected AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242), "
                          f"got {value!r}")
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"{key}: no host in {value!r}")
    return Destination(check_ae_title(aet, key), host.strip().strip("[]"),
                       _port(port, key, allow_zero=False))


def _number(value: object, key: str, minimum: float, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise ConfigError(f"{key}: must be a finite number >= {minimum:g}, got {value!r}")
    if integer and number != int(number):
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    return number


def _allow(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"allow: expected AE titles (a list or 'A,B'), got {value!r}")
    titles = [v for v in items if not isinstance(v, str) or v.strip()]  # "A,,B" or "A, "
    return tuple(check_ae_title(v, "allow") for v in titles)


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``spinefx node`` needs. Times are seconds unless the name says otherwise."""
    ae_title: str
    port: int
    data: Path
    dest: Destination
    host: str = DEFAULT_HOST
    #: calling AE titles allowed to associate; empty = any
    allow: tuple[str, ...] = ()
    #: a study is complete after this long without a new instance
    idle_seconds: float = 10.0
    #: also complete a study as soon as the association that sent it is released (for
    #: senders that send each study whole in one association, as storescu and most scanners
    #: do; a study spread over several associations would be analysed, then reopened)
    complete_on_release: bool = False
    #: an MR study that cannot be analysed (no sagittal T1/T2 pair, ...) gets a short SR in
    #: its study saying so and why; a study that is not MR never does
    report_skipped: bool = False
    #: also send a Parametric Map of the classifier's maps (Grad-CAM) on the T1 series
    parametric_map: bool = False
    #: drop-folder mode: files put here are ingested like received instances, then removed
    watch: Path | None = None
    #: received instances and results of finished jobs are deleted after this many days
    #: (0 = keep them); the job rows stay
    retention_days: float = 7.0
    #: destination down: first wait, doubled after each failure up to the maximum
    retry_initial_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    #: a model folder (None = the bundled model) and its ONNX variant (None = model.json's)
    model: str | None = None
    variant: str | None = None
    max_associations: int = 10
    #: refuse associations whose called AE title is not ours
    require_called_aet: bool = False

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_sources(cls, options: Mapping[str, Any], config_file: str | Path | None = None
                     ) -> NodeConfig:
        """The file's values (if any), overridden by ``options`` that are not None."""
        raw: dict[str, Any] = {}
        base = Path.cwd()
        if config_file is not None:
            path = Path(config_file)
            raw.update(read_config_file(path))
            base = path.resolve().parent
            raw = {k: _from_file_folder(k, v, base) for k, v in raw.items()}
        raw.update({k: v for k, v in options.items() if v is not None})
        try:
            return cls.from_mapping(raw)
        except ConfigError as exc:
            if config_file is not None:
                raise ConfigError(str(exc), config_file) from None
            raise

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> NodeConfig:
        """Check every value; unknown keys and missing required ones are errors."""
        unknown = sorted(set(raw) - set(cls.keys()))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; the keys are "
                              f"{', '.join(cls.keys())}")
        for key, option in (("ae_title", "--ae-title"), ("port", "--port"),
                            ("data", "--data"), ("dest", "--dest")):
            if raw.get(key) is None:
                raise ConfigError(f"{key} is required ({option} or the config file)")
        retry_initial = _number(raw.get("retry_initial_seconds", 5.0), "retry_initial_seconds",
                                0.01)
        retry_max = _number(raw.get("retry_max_seconds", 300.0), "retry_max_seconds", 0.01)
        if retry_max < retry_initial:
            raise ConfigError(f"retry_max_seconds ({retry_max:g}) is below "
                              f"retry_initial_seconds ({retry_initial:g})")
        host = raw.get("host", DEFAULT_HOST)
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"host: expected an address to listen on, got {host!r}")
        return cls(
            ae_title=check_ae_title(raw["ae_title"], "ae_title"),
            port=_port(raw["port"], "port", allow_zero=True),
            data=_path(raw["data"], "data"),
            dest=raw["dest"] if isinstance(raw["dest"], Destination) else parse_dest(raw["dest"]),
            host=host.strip(),
            allow=_allow(raw.get("allow")),
            idle_seconds=_number(raw.get("idle_seconds", 10.0), "idle_seconds", 0.0),
            complete_on_release=_flag(raw.get("complete_on_release", False),
                                      "complete_on_release"),
            report_skipped=_flag(raw.get("report_skipped", False), "report_skipped"),
            parametric_map=_flag(raw.get("parametric_map", False), "parametric_map"),
            watch=None if raw.get("watch") is None else _path(raw["watch"], "watch"),
            retention_days=_number(raw.get("retention_days", 7.0), "retention_days", 0.0),
            retry_initial_seconds=retry_initial, retry_max_seconds=retry_max,
            model=_optional_text(raw.get("model"), "model"),
            variant=_optional_text(raw.get("variant"), "variant"),
            max_associations=int(_number(raw.get("max_associations", 10), "max_associations",
                                         1, integer=True)),
            require_called_aet=_flag(raw.get("require_called_aet", False),
                                     "require_called_aet"))

    def to_json(self) -> dict[str, Any]:
        """The settings as the config file would hold them (no secrets, no PHI)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(data=str(self.data), dest=str(self.dest), allow=list(self.allow),
                   watch=None if self.watch is None else str(self.watch))
        return out


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (a clear error when missing, unreadable or not an object)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file unreadable ({type(exc).__name__})", path) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON (line {exc.lineno}: {exc.msg})", path) from None
    if not isinstance(raw, dict):
        raise ConfigError("expected a JSON object of settings", path)
    return raw


def _from_file_folder(key: str, value: Any, base: Path) -> Any:
    """Paths in a config file are relative to its folder, not to where the node starts."""
    if key in ("data", "watch") and isinstance(value, str) and value:
        return str(base / Path(value).expanduser())
    return value


def _path(value: object, key: str) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a folder path, got {value!r}")
    return Path(value).expanduser()


def _optional_text(value: object, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, Path):
        return str(value)
    raise ConfigError(f"{key}: expected text, got {value!r}")


def _flag(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected true or false, got {value!r}")
