"""`sertk config show|get`: a resolved experiment config, and the options every command that reads one takes."""
from pathlib import Path
from typing import Tuple

import click
import yaml

from sertk.cli_types import existing_file

# sertk.config.loading is imported when a command runs: `sertk --help` stays light

overrides = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                         help="Override a config key, e.g. --set optim.lr=1e-4 (repeatable).")
grid_option = click.option("--grid", "grids", multiple=True, metavar="KEY=[V1,V2]",
                           help="Try these values of KEY on dev: replaces or adds KEY in the config's grid "
                                "(a scalar is one value; KEY= takes KEY out). Repeatable.")


@click.group("config")
def config_group() -> None:
    """Show resolved experiment configs."""


@config_group.command()
@click.argument("config_file", type=existing_file)
@overrides
@grid_option
def show(config_file: Path, sets: Tuple[str], grids: Tuple[str]) -> None:
    """Print the fully resolved config (defaults, model defaults, file, overrides), its grid included; a grid of
    several points is followed by a comment listing them."""
    from sertk.config.loading import grid_points, load_config, point_text
    config = load_config(config_file, sets, grids)
    click.echo(yaml.safe_dump(config, sort_keys=False), nl=False)
    points = grid_points(config["grid"])
    if len(points) > 1:
        click.echo(f"# grid: {len(points)} points, each trained and scored on dev (sertk train):")
        for i, point in enumerate(points, start=1):
            click.echo(f"#   {i}: {point_text(point)}")


@config_group.command()
@click.argument("config_file", type=existing_file)
@click.argument("key")
@overrides
@grid_option
def get(config_file: Path, key: str, sets: Tuple[str], grids: Tuple[str]) -> None:
    """Print one key of the resolved config, e.g. `features.tag` (for shell recipes). A key outside `model.`
    is read without importing the model or torch (the model's options are checked by `config show` and
    `sertk train`)."""
    from sertk.config.loading import get_key, load_config
    value = get_key(load_config(config_file, sets, grids, models=key == "model" or key.startswith("model.")), key)
    click.echo(value if not isinstance(value, (dict, list)) else yaml.safe_dump(value).strip())
