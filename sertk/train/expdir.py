"""What an experiment dir holds, so that `sertk train --exp` writes only into a folder it (or a decode or
pack of its model) made: a mistyped --exp pointing at somebody's folder is refused, not filled."""
from pathlib import Path, PurePosixPath

from sertk.decode import owns_decode_dir
from sertk.errors import OutputError
from sertk.fsutil import foreign_entry, owned_by

GRID_DIR = "grid"      # grid points train into EXP/grid/<k>_<values>/, each an exp dir of its own
PACK_FILE = "model.sertk"   # what a recipe's stage 6 (`sertk pack`) writes into each fold's exp dir

# what training (its lock included), grid selection, `sertk pack` and the atomic writers' temp files leave in
# an exp dir
# (last.yaml: last.pt without tensors, which `sertk results keep` writes into a kept copy)
_owns_run_files = owned_by(("train.log", "config.yaml", "environment.yaml", "last.pt", "last.yaml", "best.pt",
                            "grid.yaml", "refit.yaml", PACK_FILE, "tensorboard/*", ".*.tmp", ".lock"))


def owns_exp_dir(rel: PurePosixPath, is_empty_dir: bool = False) -> bool:
    parts = rel.parts
    if parts[0].startswith("decode") and len(parts) > 1:        # decode_dev/, decode_test/, any --out decode*
        return owns_decode_dir(PurePosixPath(*parts[1:]), is_empty_dir)
    if parts[0] == GRID_DIR:
        return len(parts) <= 2 and is_empty_dir or (len(parts) > 2 and owns_exp_dir(PurePosixPath(*parts[2:]),
                                                                                    is_empty_dir))
    return _owns_run_files(rel, is_empty_dir) or (is_empty_dir and parts[0].startswith("decode"))


def check_exp_dir(exp_dir: Path) -> None:
    """Raise `OutputError` when `exp_dir` holds something no sertk run made (one line, naming it)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.exists():
        return
    if not exp_dir.is_dir():
        raise OutputError(f"{exp_dir}: exists and is not an experiment dir; give another --exp")
    if (exp_dir / "last.yaml").is_file() and not (exp_dir / "last.pt").is_file():
        raise OutputError(f"{exp_dir}: holds the kept record of a finished run (last.yaml, no checkpoints: "
                          "`sertk results keep`); nothing to train from: give a new --exp")
    found = foreign_entry(exp_dir, owns_exp_dir)
    if found:
        raise OutputError(f"{exp_dir}: holds '{found}', which no sertk run wrote; refusing to train into it "
                          "(give a new --exp or move that away)")
