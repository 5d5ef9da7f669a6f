"""Command-line options for the run Params, generated from their one specification (``HARVEST_PARAMS``).

``harvest run`` / ``harvest stage`` and ``scripts/run_harvest.py`` (``make harvest``) both call
:func:`add_param_options` and :func:`given_params`, so a Param added to the spec is settable from
both command lines without touching either, with the type, bounds and help text the trigger form
has. Settings merge as options > ``--params`` JSON > ``--params-file`` > defaults.

Standard library only (YAML is imported when a ``.yaml`` file is read): the DAG-side script parses
its arguments before Airflow is configured.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harvest.settings.errors import ConfigError
from harvest.settings.params import HARVEST_PARAMS, ParamSpec

#: Prefix of the argparse destinations of the Param options, so they cannot clash with the
#: script's own options (``--destination`` the Param and a script's ``--demo`` live side by side).
DEST_PREFIX = "param__"

_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def option_name(name: str) -> str:
    """``max_depth`` -> ``--max-depth``."""
    return "--" + name.replace("_", "-")


def split_list(text: str) -> list[str]:
    """A comma-separated list, stripped, empty items dropped. Commas inside (), [] or {} do not
    split, so a pattern such as ``/a{1,3}/`` stays one item."""
    items, depth, current = [], [], []
    for char in text:
        if char in _CLOSERS:
            depth.append(_CLOSERS[char])
        elif depth and char == depth[-1]:
            depth.pop()
        elif char == "," and not depth:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


class _ExtendList(argparse.Action):
    """An array Param: the option may be repeated, each value comma-separated (see split_list)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, [*current, *split_list(values)])


def _bounded(spec: ParamSpec, convert):
    """``int``/``float`` with the Param's bounds, so a bad value is refused before any work starts."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {spec.type}, got {text!r}") from None
        if spec.minimum is not None and value < spec.minimum:
            raise argparse.ArgumentTypeError(f"must be at least {spec.minimum}, got {value}")
        if spec.maximum is not None and value > spec.maximum:
            raise argparse.ArgumentTypeError(f"must be at most {spec.maximum}, got {value}")
        return value

    parse.__name__ = spec.type  # argparse names the type in its error message
    return parse


def _help(spec: ParamSpec) -> str:
    text = spec.title + (f": {spec.description}" if spec.description else "")
    if spec.type == "array":
        text += " Repeatable, or comma-separated."
    default = list(spec.default) if spec.type == "array" else spec.default
    if default not in ("", [], None):
        text += f" (default: {default})"
    if spec.env:
        text += f" [env {spec.env}]"
    return text.replace("%", "%%")  # argparse formats help strings with %


def add_param_options(parser: argparse.ArgumentParser) -> None:
    """One option per Param of ``HARVEST_PARAMS``, plus ``--params`` and ``--params-file``."""
    group = parser.add_argument_group(
        "run Params",
        "Each Param of the image_harvest DAG (harvest/settings/params.py); options win over "
        "--params, which wins over --params-file.",
    )
    group.add_argument("--params", metavar="JSON", help="Params as a JSON object, e.g. '{\"top_k\": 3}'")
    group.add_argument(
        "--params-file", metavar="FILE", type=Path, help="Params from a JSON or YAML file (.yaml/.yml)"
    )
    for spec in HARVEST_PARAMS.values():
        dest = DEST_PREFIX + spec.name
        flag = option_name(spec.name)
        if spec.type == "boolean":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=_help(spec))
        elif spec.type == "array":
            group.add_argument(flag, dest=dest, action=_ExtendList, metavar="ITEM[,ITEM]", help=_help(spec))
        elif spec.type == "integer":
            group.add_argument(flag, dest=dest, type=_bounded(spec, int), metavar="N", help=_help(spec))
        elif spec.type == "number":
            group.add_argument(flag, dest=dest, type=_bounded(spec, float), metavar="X", help=_help(spec))
        else:
            group.add_argument(flag, dest=dest, metavar="TEXT", help=_help(spec))


def option_params(args: argparse.Namespace) -> dict[str, Any]:
    """The Params given as options (those not given are absent, so they do not override a file)."""
    given = {}
    for name in HARVEST_PARAMS:
        value = getattr(args, DEST_PREFIX + name, None)
        if value is not None:
            given[name] = value
    return given


def read_params_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML object of Params; a clear error naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"params file {path}: cannot read: {exc.strerror or exc}"]) from exc
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"params file {path}: not valid YAML: {exc}"]) from exc
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError([f"params file {path}: not valid JSON: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError([f"params file {path}: expected an object of Params, got {type(data).__name__}"])
    return dict(data)


def _params_json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError([f"--params: not valid JSON: {exc}"]) from exc
    if not isinstance(data, Mapping):
        raise ConfigError(["--params: expected a JSON object of DAG Params"])
    return dict(data)


def given_params(args: argparse.Namespace) -> dict[str, Any]:
    """The Params this command line sets: ``--params-file``, then ``--params``, then the options."""
    params: dict[str, Any] = {}
    if getattr(args, "params_file", None) is not None:
        params.update(read_params_file(args.params_file))
    if getattr(args, "params", None) is not None:
        params.update(_params_json(args.params))
    params.update(option_params(args))
    return params


def merge(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``: the lowest layer (environment, demo site, a prepared run's Params)."""
    return {**defaults, **given}
