"""Recipe options (egs/TEMPLATE/ser.sh, tools/parse_options.sh): only declared options are options, every
option is checked before any stage runs or anything is written (one line, exit 1), and exp/.../run.sh,
the record of the last good command, is written only by a run that succeeded (issue 24)."""
import os
from pathlib import Path

import pytest

from recipes import copy_recipe, run_recipe
from replicas import make_emodb, make_ravdess


@pytest.fixture
def corpus(tmp_path):
    return make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"])


def _tree(recipe: Path):
    return sorted(str(p.relative_to(recipe)) for p in recipe.rglob("*"))


@pytest.mark.parametrize("args, message", [
    # stage numbers: these used to exit 0 having run nothing ("abc" with seven bash errors)
    (["--stage", "9"], "--stage 9: the stages are 0..6 (--stage 7 runs none, checking the options only)"),
    (["--stage", "abc"], "--stage abc: the stages are 0..6"),
    (["--stage", ""], "--stage : the stages are 0..6"),
    (["--stop_stage", "abc"], "--stop_stage abc: the stages are 0..6"),
    (["--stop_stage", "9"], "--stop_stage 9: the stages are 0..6"),
    (["--stage", "99999999999999999999"], "--stage 99999999999999999999: the stages are 0..6"),   # past 64 bits
    (["--stage", "3", "--stop_stage", "2"], "--stop_stage 2 is below --stage 3: no stage would run"),
    # shell variables of the scripts and the recipe's settings are not options
    (["--PATH", "/x"], "unknown option --PATH (run with --help)"),
    (["--corpus", "foo"], "unknown option --corpus (run with --help)"),
    (["--recipe_dir", "/x"], "unknown option --recipe_dir (run with --help)"),
    (["--downloadable", "false"], "unknown option --downloadable (run with --help)"),
    (["--root_var", "PATH"], "unknown option --root_var (run with --help)"),
    (["--exp", "/tmp/x"], "unknown option --exp (run with --help)"),
    # values checked before stage 0 (--protocol bogus used to prepare data/all first)
    (["--protocol", "bogus"], "--protocol bogus: not a protocol (known: loso, "),
    (["--folds", "0"], "--folds 0: give all or fold numbers from 1"),
    (["--folds", "1,x"], "--folds 1,x: give all or fold numbers from 1"),
    (["--nj", "0"], "--nj, --fold_jobs and --jobs_per_gpu must be at least 1"),
    (["--jobs_per_gpu", "0"], "--nj, --fold_jobs and --jobs_per_gpu must be at least 1"),
    (["--jobs_per_gpu", "2"], "--jobs_per_gpu 2: for folds sharing GPUs of this machine"),
    (["--jobs_per_gpu", "2", "--ngpu", "1", "--backend", "slurm"], "--jobs_per_gpu 2: for folds sharing GPUs"),
    (["--nj", "two"], "--nj two: give auto or a whole number"),
    (["--split_hours", "x"], "--split_hours x: give a whole number"),
    (["--nj", "99999999999999999999"], "--nj 99999999999999999999: give auto or a whole number (at most 6 digits)"),
    (["--backend", "pbs"], "--backend pbs: use local or slurm"),
    (["--ngpu", "1", "--nproc", "2"], "--nproc 2 with --ngpu 1: a process per GPU"),
    (["--nproc", "2", "--fold_jobs", "2", "--torchrun_args", "--nnodes 2 --rdzv_endpoint h:29400"],
     "--fold_jobs 2 with --torchrun_args '--nnodes 2 --rdzv_endpoint h:29400': folds at once need their own"),
    (["--model", "nope"], "no model config conf/models/nope.yaml"),
    (["--cross_root", "/x"], "--cross_root /x needs --cross_corpus NAME"),
    (["--refit", "yes"], "--refit takes true or false, not 'yes'"),
    (["--cross_corpus", "nope"], "--cross_corpus nope: no class mapping conf/cross/emodb_to_nope.yaml"),
])
def test_a_bad_option_is_one_line_before_anything_runs(tmp_path, corpus, args, message):
    recipe = copy_recipe(tmp_path, "emodb")
    before = _tree(recipe)
    # with a root given, any stage that ran would write downloads/, data/ or exp/
    result = run_recipe(recipe, "--emodb_root", corpus, *args, check=False)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and result.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("./run.sh: ") and message in lines[0], result.stderr
    assert _tree(recipe) == before


def test_recipe_options_are_the_documented_ones(tmp_path):
    # iemocap's own options are those its recipe_help documents; its settings are not options
    recipe = copy_recipe(tmp_path, "iemocap")
    result = run_recipe(recipe, "--stage", "0", "--stop_stage", "0", "--improvised-only", "true", "--excited_only",
                        "false", "--iemocap_root", tmp_path / "nowhere")
    assert result.stderr.endswith("[stage 0] using --iemocap_root " + str(tmp_path / "nowhere") + "\n")
    # the option took effect: configure_recipe named the impro variant
    assert "--improvised-only true" in (recipe / "exp" / "loso_session_impro" / "crnn" / "run.sh").read_text()
    result = run_recipe(recipe, "--corpus_source", "x", check=False)
    assert result.returncode == 1 and result.stderr == "./run.sh: unknown option --corpus_source (run with --help)\n"
    result = run_recipe(recipe, "--help")
    assert "[--improvised_only true|false] [--excited_only true|false]" in result.stdout


def test_options_come_from_the_command_line_not_the_environment(tmp_path, corpus):
    """`model=nope stage=5 ./run.sh` ran stage 5 of model nope, and the exp dir's run.sh record said neither."""
    recipe = copy_recipe(tmp_path, "emodb")
    result = run_recipe(recipe, "--emodb_root", corpus, "--stage", "7",
                        env={"model": "nope", "stage": "5", "fold_jobs": "x", "backend": "pbs", "refit": "yes"})
    assert result.returncode == 0 and result.stderr == ""


def test_a_recipe_without_a_root_default_still_has_the_root_option(tmp_path):
    copy_recipe(tmp_path, "emodb")
    recipe = tmp_path / "egs" / "mycorpus"
    recipe.mkdir()
    (recipe / "run.sh").write_text('#!/usr/bin/env bash\ncd "$(dirname "$0")"\ncorpus=mycorpus\nprotocol=loso\n'
                                   'import_csv=true\n. ../TEMPLATE/ser.sh\n')
    (recipe / "run.sh").chmod(0o755)
    run_recipe(recipe, "--stage", "7", "--mycorpus_root", "list.csv")
    result = run_recipe(recipe, "--stage", "7", "--import_csv", "false", check=False)
    assert result.returncode == 1 and "unknown option --import_csv" in result.stderr


def test_a_failing_run_keeps_the_record_of_the_last_good_one(tmp_path, corpus):
    recipe = copy_recipe(tmp_path, "emodb")
    exp = recipe / "exp" / "loso" / "crnn"
    run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "1")
    record = (exp / "run.sh").read_text()
    assert f"./run.sh --emodb_root {corpus} --stop_stage 1" in record and os.access(exp / "run.sh", os.X_OK)

    # a stage fails: the record is the successful run's, and no temporary file is left
    result = run_recipe(recipe, "--stage", "2", "--stop_stage", "2", "--extract_args", "--no-such-flag",
                        check=False)
    assert result.returncode != 0 and "--no-such-flag" in result.stderr
    assert (exp / "run.sh").read_text() == record
    assert sorted(p.name for p in exp.iterdir()) == ["run.sh"]

    # a bad option: the same
    assert run_recipe(recipe, "--stage", "9", check=False).returncode == 1
    assert (exp / "run.sh").read_text() == record

    # a fold the made folds lack is refused before stage 2 extracts any feature
    before = _tree(recipe)
    result = run_recipe(recipe, "--stage", "2", "--folds", "1,7", check=False)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "./run.sh: error: --folds: '7' is not a fold of data/loso (1..3)"]
    assert _tree(recipe) == before and (exp / "run.sh").read_text() == record

    # the next good run is the new record
    run_recipe(recipe, "--stage", "1", "--stop_stage", "1")
    assert (exp / "run.sh").read_text().endswith("./run.sh --stage 1 --stop_stage 1 \n")


def test_only_a_run_of_stages_writes_the_record_and_never_over_somebody_s_file(tmp_path, corpus):
    recipe = copy_recipe(tmp_path, "emodb")
    exp = recipe / "exp" / "loso" / "crnn"
    run_recipe(recipe, "--emodb_root", corpus, "--stage", "7", "--model", "esernet")
    assert not (recipe / "exp").exists()          # checking the options makes no exp dir
    exp.mkdir(parents=True)
    (exp / "run.sh").write_text("echo my own notes\n")
    result = run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "1")
    assert "exp/loso/crnn/run.sh is not a record this recipe wrote; left as it is" in result.stderr
    assert (exp / "run.sh").read_text() == "echo my own notes\n"


def test_a_fold_check_inside_a_stage_stops_the_run(tmp_path, corpus):
    recipe = copy_recipe(tmp_path, "emodb")
    # no data yet, so the folds are checked at stage 3: the error used to be printed and the run went on (exit 0)
    result = run_recipe(recipe, "--stage", "3", "--stop_stage", "4", "--folds", "2", check=False)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "./run.sh: error: no folds in data/loso; run stage 1 first"], result.stderr
    assert not (recipe / "exp").exists()
    # on a first run, the folds are checked as soon as stage 1 has made them, before stage 2 extracts anything
    result = run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "2", "--folds", "11", check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        "./run.sh: error: --folds: '11' is not a fold of data/loso (1..3)")
    assert (recipe / "data" / "loso" / "protocol.yaml").is_file() and not (recipe / "dump").exists()
    run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "1")
    result = run_recipe(recipe, "--stage", "3", "--stop_stage", "3", "--folds", "01", check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        "./run.sh: error: no features in dump/logmel64: run stage 2 first")
    result = run_recipe(recipe, "--stage", "4", "--stop_stage", "4", "--folds", "01", check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        "./run.sh: error: fold 1 has not been trained (exp/loso/crnn/fold1 is missing): run stage 3 first")


def test_a_train_args_typo_is_one_line_before_any_stage_runs(tmp_path, corpus):
    recipe = copy_recipe(tmp_path, "emodb")
    result = run_recipe(recipe, "--emodb_root", corpus, "--train_args", "--set train.epochz=1", check=False)
    assert result.returncode == 1 and result.stderr.startswith("sertk: error: unknown config key 'train.epochz'")
    assert len(result.stderr.splitlines()) == 1 and not (recipe / "data").exists()


def test_another_corpus_folder_than_the_prepared_data_s_is_refused(tmp_path, corpus):
    other = make_emodb(tmp_path / "other", speakers=["03", "08", "09"], texts=["a01"])
    recipe = copy_recipe(tmp_path, "emodb")
    run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "1")
    before = (recipe / "data" / "all" / "wav.scp").read_text()
    result = run_recipe(recipe, "--emodb_root", other, "--stop_stage", "1", check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith(
        f"./run.sh: error: data/all was prepared from another folder than --emodb_root {other} ("), result.stderr
    assert (recipe / "data" / "all" / "wav.scp").read_text() == before
    run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "1")   # the same folder: skipped as before


def test_another_cross_corpus_folder_than_the_prepared_one_is_refused(tmp_path, corpus):
    first, second = (make_ravdess(tmp_path / name, actors=range(1, 5), emotions=[1, 3, 4, 5, 6, 7], with_song=False)
                     for name in ("rav1", "rav2"))
    recipe = copy_recipe(tmp_path, "emodb")
    cross = ["--emodb_root", corpus, "--cross_corpus", "ravdess", "--stop_stage", "1"]
    run_recipe(recipe, *cross, "--cross_root", first)
    result = run_recipe(recipe, *cross, "--cross_root", second, check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith(
        f"./run.sh: error: data/ravdess_all was prepared from another folder than --cross_root {second} ("), result.stderr
    run_recipe(recipe, *cross, "--cross_root", first)                    # the same folder: skipped as before
    # a class mapping of the recipe's own, added after the protocol was made, is not silently ignored
    (recipe / "conf" / "cross").mkdir(parents=True, exist_ok=True)
    (recipe / "conf" / "cross" / "emodb_to_ravdess.yaml").write_text(
        "source: emodb\ntarget: ravdess\nclasses: [anger, happiness, sadness, neutral]\n"
        "source_map: {boredom: drop, fear: drop, disgust: drop}\n"
        "target_map: {calm: drop, surprise: drop, fear: drop, disgust: drop}\n")
    result = run_recipe(recipe, *cross, "--cross_root", first, check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
        "sertk: error: data/cross_ravdess was made with another class mapping than conf/cross/emodb_to_ravdess.yaml "
        "(now: classes ['anger', 'happiness', 'sadness', 'neutral']); remove data/cross_ravdess to make it again")


def test_a_model_key_typo_under_torchrun_is_one_line_not_a_traceback_per_process(tmp_path, corpus):
    recipe = copy_recipe(tmp_path, "emodb")
    result = run_recipe(recipe, "--emodb_root", corpus, "--nproc", "2", "--train_args", "--set model.n_melz=3",
                        check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if "n_melz" in line]
    assert len(result.stderr.splitlines()) == 1 and not (recipe / "data").exists()
