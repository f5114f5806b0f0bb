"""YAML loading that reads `1e-4` as a number (PyYAML's YAML 1.1 rules read it as a string) and refuses a
key given twice in one mapping (PyYAML keeps the last and silently drops the other)."""
import re
from pathlib import Path
from typing import Any, Dict, List, Type

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that gives one key twice; `key` and `line` (1-based) of the second."""

    def __init__(self, key, line: int, first_line: int, mark):
        super().__init__(None, None, f"duplicate key {key!r} (first at line {first_line})", mark)
        self.key, self.line, self.first_line = key, line, first_line


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *base`: its keys may be overridden
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:     # an unhashable key: the base class says so
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, line, first, key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _ConfigLoader(_Loader):
    """Experiment configs: an integer is decimal digits only (`010` is 10), a float as FLOAT says. YAML 1.1
    reads `010` as octal 8, `0x10` as 16 and `1:30` as 90 (`1:30.5` as 90.5); here those are strings, which a
    setting's type check then refuses."""

    yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in NUMBER_TAGS]
                               for first, resolvers in _Loader.yaml_implicit_resolvers.items()}

    def construct_yaml_int(self, node):
        return int(self.construct_scalar(node).replace("_", ""), 10)


_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9][0-9_]*$"),
                                    list("-+0123456789"))
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))   # not 1:30.5
_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)


def load_yaml(text: str, config: bool = False):
    """The YAML document in `text`; `config`: with decimal-only integers (_ConfigLoader)."""
    return yaml.load(text, Loader=_ConfigLoader if config else _Loader)


def read_yaml_file(path, error: Type[Exception], mapping: bool = True, config: bool = False):
    """The YAML document in `path`; a file that is not YAML text (or, with `mapping`, not a mapping)
    raises `error` with a one-line message naming it. `config`: as load_yaml's."""
    path = Path(path)
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"), config)
    except DuplicateKeyError as e:
        raise error(f"{path}:{e.line}: duplicate key {e.key!r} (first at line {e.first_line}); "
                    "give each key once") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise error(f"{path}: not a valid YAML text file ({e.__class__.__name__})") from None
    if mapping and not isinstance(doc, dict):
        raise error(f"{path}: expected a mapping of keys to values")
    return doc


def flat_keys(doc: Any, lists: bool = True, prefix: str = "") -> Dict[str, Any]:
    """A YAML document's leaves by dotted key (`train.patience`), lists flattened by index too (`lists`) or
    kept as values; an empty mapping or list is a leaf of its own."""
    if isinstance(doc, dict) or (lists and isinstance(doc, list)):
        items = doc.items() if isinstance(doc, dict) else enumerate(doc)
        out: Dict[str, Any] = {}
        for key, value in items:
            out.update(flat_keys(value, lists, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): type(doc)()}
    return {prefix.rstrip("."): doc}


def dotted_differences(before: Any, now: Any, lists: bool = True) -> List[str]:
    """'key: before -> now' for every dotted key (flat_keys) whose value differs, sorted; '(absent)' for a key
    one side lacks."""
    a, b = flat_keys(before, lists), flat_keys(now, lists)
    missing = "(absent)"
    return [f"{k}: {a.get(k, missing)} -> {b.get(k, missing)}" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]
