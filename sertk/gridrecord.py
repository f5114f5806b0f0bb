"""A fold's `grid.yaml`: the record `sertk train --grid` keeps of its points, their dev scores and its choice
(written by sertk.train.grid; read there to resume, and by the results tools). Torch-free: `sertk results dev`
and `sertk config get` read it without loading torch."""
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

from sertk.errors import SertkError
from sertk.yamlutil import read_yaml_file

GRID_FILE = "grid.yaml"


def read_grid_record(path: Path, error: Type[SertkError]) -> Dict[str, Any]:
    """The record at `path`, checked to be one sertk train wrote (a grid, a list of points, a choice or null);
    else `error` with one line."""
    doc = read_yaml_file(path, error)
    points, chosen = doc.get("points"), doc.get("chosen", False)   # False: a record without the key fails
    if not isinstance(doc.get("grid"), dict) or not isinstance(points, list) or \
            not all(isinstance(p, dict) for p in points) or not (chosen is None or isinstance(chosen, dict)):
        raise error(f"{path}: not a grid record written by sertk train (grid, points, chosen)")
    return doc


def best_point(points: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The trained point (dev score set) with the best dev score, the earliest of equals: the grid's choice once
    every point is trained, the best so far while it runs; None before any point is."""
    trained = [p for p in points if p.get("dev_score") is not None]
    return max(trained, key=lambda p: (p["dev_score"], -p["point"])) if trained else None
