"""`sertk decode`: a trained model's decode dirs for one or more data dirs."""

import click

from sertk.cli_types import dir_path, existing_dir, existing_file

# the decoder imports torch and the models: imported when the command runs


@click.command()
@click.option("--exp", "exp_dir", required=True, type=existing_dir, help="Experiment dir holding the checkpoint.")
@click.option("--data", "data_dirs", required=True, multiple=True, type=existing_dir,
              help="Data dir to decode (repeatable, each with its own --out, in the same order).")
@click.option("--feats", required=True, type=existing_dir, help="Feature dump dir holding their features.")
@click.option("--out", "out_dirs", required=True, multiple=True, type=dir_path,
              help="Decode dir to write, one per --data.")
@click.option("--checkpoint", default="best.pt", show_default=True, help="Checkpoint file in the exp dir.")
@click.option("--retest", is_flag=True,
              help="Allow decoding a test set again, with a checkpoint other than best.pt, or of a model still "
                   "training. Test results "
                   "must never steer a model choice.")
@click.option("--skip-unfinished", is_flag=True,
              help="Decode nothing, and say so, when the model is still training (its last.pt is not finished): "
                   "the recipe's stage 4 beside trainings that go on.")
@click.option("--protocol-dir", type=existing_dir, help="Protocol dir, recorded for RESULTS.md.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--device", help="cpu, cuda or cuda:N [default: cuda if available].")
@click.option("--class-map", type=existing_file,
              help="Decode another corpus: the mapping of the model's and DATA's classes onto shared ones "
                   "(conf/cross/<model corpus>_to_<data corpus>.yaml).")
def decode(exp_dir, data_dirs, feats, out_dirs, checkpoint, retest, skip_unfinished, protocol_dir, batch_size,
           device, class_map) -> None:
    """Segment posteriors of DATA with the dev-selected checkpoint, and utterance decisions by voting.
    Several data dirs (e.g. a fold's dev and test) can be decoded in one call: --data D1 --out O1 --data D2 --out O2."""
    from sertk.decode.decoder import decode_data_dir
    from sertk.device import pick_device
    if len(data_dirs) != len(out_dirs):
        raise click.UsageError(f"give one --out per --data ({len(data_dirs)} --data, {len(out_dirs)} --out)")
    repeated = sorted({str(o) for o in out_dirs if sum(p.resolve() == o.resolve() for p in out_dirs) > 1})
    if repeated:   # the second set's decode would replace the first's
        raise click.UsageError(f"each --data needs its own --out; {', '.join(repeated)} is given more than once")
    device = pick_device(device)
    if skip_unfinished:
        from sertk.decode.decoder import still_training
        training = still_training(exp_dir)
        if training:
            click.echo(f"{exp_dir}: still training ({', '.join(training)}); not decoded")
            return
    for data_dir, out in zip(data_dirs, out_dirs):
        result = decode_data_dir(exp_dir, data_dir, feats, out, checkpoint=checkpoint, retest=retest,
                                 protocol_dir=protocol_dir, batch_size=batch_size, device=device,
                                 class_map=class_map)
        click.echo(f"{out}: {result}")
