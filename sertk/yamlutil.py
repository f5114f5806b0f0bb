"""YAML loading that reads `1e-4` as a number (PyYAML's YAML 1.1 rules read it as a string)."""
import re
from pathlib import Path
from typing import Type

import yaml


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def read_yaml_file(path, error: Type[Exception], mapping: bool = True):
    """The YAML document in `path`; a file that is not YAML text (or, with `mapping`, not a mapping)
    raises `error` with a one-line message naming it."""
    path = Path(path)
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise error(f"{path}: not a valid YAML text file ({e.__class__.__name__})") from None
    if mapping and not isinstance(doc, dict):
        raise error(f"{path}: expected a mapping of keys to values")
    return doc
