"""The `sertk` command. Subcommands live beside the code they drive (e.g. sertk/data/cli.py).

User mistakes raise `SertkError`; here they become one line on stderr and exit status 1.
"""
import logging

import click

from sertk import __version__
from sertk.errors import SertkError


class UserError(click.ClickException):
    def show(self, file=None) -> None:
        click.echo(f"sertk: error: {self.message}", err=True)


class SertkGroup(click.Group):
    """A click group whose commands report `SertkError` and OS errors as one-line messages."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SertkError as e:
            raise UserError(str(e)) from None
        except OSError as e:  # permissions, full disk: the user's environment, not a bug
            raise UserError(f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")) from None


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return f"sertk: {record.levelname.lower()}: {msg}" if record.levelno >= logging.WARNING else msg


def _setup_logging(verbose: int, quiet: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter())
    handler.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger("sertk")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.INFO)  # file logs (train.log) keep INFO when quiet


@click.group(cls=SertkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="sertk")
@click.option("-v", "--verbose", count=True, help="Show debug messages.")
@click.option("-q", "--quiet", is_flag=True, help="Show only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """sertk: speech emotion recognition with Kaldi-style data dirs and recipes."""
    _setup_logging(verbose, quiet)


def _register() -> None:
    from sertk.config.cli import config_group
    from sertk.data.cli import data
    from sertk.decode.cli import decode
    from sertk.features.cli import features
    from sertk.inference.cli import infer, pack
    from sertk.jobs.cli import jobs
    from sertk.score_cli import results, score
    from sertk.train.cli import refit, train
    for command in (data, features, train, refit, decode, score, results, pack, infer, config_group, jobs):
        main.add_command(command)


_register()
