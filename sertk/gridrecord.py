"""A fold's `grid.yaml`: the record `sertk train --grid` keeps of its points, their dev scores and its choice
(written by sertk.train.grid; read there to resume, and by the results tools). Torch-free: `sertk results dev`
and `sertk config get` read it without loading torch."""
from pathlib import Path
from typing import Any, Dict, Type

from sertk.errors import SertkError
from sertk.yamlutil import read_yaml_file

GRID_FILE = "grid.yaml"


def read_grid_record(path: Path, error: Type[SertkError]) -> Dict[str, Any]:
    """The record at `path`, checked to be one sertk train wrote (a grid, a list of points, a choice or null);
    else `error` with one line."""
    doc = read_yaml_file(path, error)
    points, chosen = doc.get("points"), doc.get("chosen", False)
    if not isinstance(doc.get("grid"), dict) or not isinstance(points, list) or \
            not all(isinstance(p, dict) for p in points) or not (chosen is None or isinstance(chosen, dict)):
        raise error(f"{path}: not a grid record written by sertk train (grid, points, chosen)")
    return doc
