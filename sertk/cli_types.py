"""The path types every sertk command's options and arguments use, so they check paths alike.

click checks them before the command runs and prints a one-line usage error (e.g. "Directory 'x' does
not exist."), never a traceback."""
from pathlib import Path

import click

existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
existing_path = click.Path(exists=True, path_type=Path)     # a file or a folder
dir_path = click.Path(file_okay=False, path_type=Path)      # a folder, made when missing
file_path = click.Path(dir_okay=False, path_type=Path)      # a file, written or read later
any_path = click.Path(path_type=Path)
