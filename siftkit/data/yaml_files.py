"""YAML as the kit reads it (params files, shift specs, `--extra` mappings, study specs):
PyYAML's safe loader with YAML 1.2's numbers and an error for a key given twice."""

from __future__ import annotations

import re
from typing import Any


def _load_yaml_loader():
    import yaml

    int_tag, float_tag = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"

    class ParamsLoader(yaml.SafeLoader):
        """PyYAML's safe loader with YAML 1.2's numbers and no silent duplicate keys.

        YAML 1.1 (PyYAML's default) reads `010` as 8 and `1:30` as 90, and `1e-3` as a
        string; papermill and the CLI read `010` as 10. Here a number is decimal (or 0x/0o
        hex/octal), `1e-3` is a float, and anything else stays a string for RunConfig to judge.
        """

        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    break
                if first != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given at line {first})", key_node.start_mark
                    )
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node):
            text = self.construct_scalar(node).replace("_", "")
            sign = -1 if text.startswith("-") else 1
            digits = text.lstrip("+-")
            base = {"0x": 16, "0o": 8}.get(digits[:2].lower(), 10)
            return sign * int(digits[2:] if base != 10 else digits, base)

    ParamsLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (int_tag, float_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    ParamsLoader.add_implicit_resolver(
        int_tag, re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$"), list("-+0123456789")
    )
    ParamsLoader.add_implicit_resolver(
        float_tag,
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )
    ParamsLoader.add_constructor(int_tag, ParamsLoader.construct_yaml_int)
    return ParamsLoader


def load_yaml(text: str) -> Any:
    """Parse a params file (or a CLI `--extra` mapping): YAML, with YAML 1.2's numbers and an
    error for a key given twice (PyYAML would silently keep the last one)."""
    import yaml

    global _PARAMS_LOADER
    if _PARAMS_LOADER is None:
        _PARAMS_LOADER = _load_yaml_loader()
    return yaml.load(text, Loader=_PARAMS_LOADER)  # noqa: S506 - a SafeLoader subclass


_PARAMS_LOADER = None
