"""One training process per exp dir (sertk.train.exp_lock): a second `sertk train` or `sertk refit` on an exp dir
that another process is training in is refused with one line and changes nothing there."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from helpers import emodb_loso, module_cli as cli
from sertk.features.extract import extract_features
from sertk.train.exp_lock import LOCK_FILE, ExpDirBusy, exp_dir_lock

FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}
CONFIG = """\
model: {name: crnn, n_mels: 16, channels: [4, 8], lstm_hidden: 8, attention_hidden: 8}
segments: {length: 0.3, hop: 0.1}
train: {epochs: 1, batch_size: 4, amp: false}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = emodb_loso(tmp_path_factory.mktemp("lock"))
    extract_features(base / "all", FEATURES, base / "dump")
    (base / "conf.yaml").write_text(CONFIG)
    return base


def train_args(base, exp):
    return ("train", "--config", base / "conf.yaml", "--fold-dir", base / "loso" / "fold1", "--feats",
            base / "dump", "--exp", exp, "--device", "cpu")


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_training_in_a_busy_exp_dir_is_refused_and_runs_once_it_is_free(setup, tmp_path, user_error):
    exp = tmp_path / "exp" / "fold1"
    with exp_dir_lock(exp):   # as a first `sertk train` holds it while it trains
        holder = (exp / LOCK_FILE).read_text().strip()
        assert holder.startswith(f"process {os.getpid()} on ")
        before = snapshot(exp)
        message = user_error(cli(*train_args(setup, exp)))
        assert message == (f"{exp} is being trained by {holder}; wait for it to finish, or stop it and run the "
                           "command again (it resumes from last.pt)")
        assert snapshot(exp) == before   # nothing trained or written there
    done = cli(*train_args(setup, exp))
    assert done.exit_code == 0, done.output
    assert (exp / "best.pt").is_file() and (exp / LOCK_FILE).is_file()
    again = cli(*train_args(setup, exp))   # a finished run in a free dir: skipped, as before
    assert again.exit_code == 0 and "already finished" in again.output, again.output

    source = exp   # sertk refit takes the lock of its own exp dir the same way
    refit_exp = tmp_path / "exp" / "refit1"
    with exp_dir_lock(refit_exp):
        message = user_error(cli("refit", source, "--fold-dir", setup / "loso" / "fold1", "--feats", setup / "dump",
                                 "--exp", refit_exp, "--device", "cpu"))
        assert message.startswith(f"{refit_exp} is being trained by process {os.getpid()} ")
        assert sorted(p.name for p in refit_exp.iterdir()) == [LOCK_FILE]


def test_the_checkpoint_temp_files_a_killed_run_left_are_removed_once_the_lock_is_held(setup, tmp_path,
                                                                                       user_error):
    exp = tmp_path / "exp" / "fold1"
    assert cli(*train_args(setup, exp)).exit_code == 0
    stale = [exp / ".last.pt.k3j9x2.tmp", exp / "grid" / "1_lr=0.1" / ".best.pt.a8b7c6.tmp"]
    for tmp in stale:   # as atomic_write_with leaves them when its process is killed mid-write
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(b"x" * 1_500_000)
    other = exp / ".config.yaml.q1w2e3.tmp"   # not a checkpoint's: left as it is
    other.write_text("model: {}")
    with exp_dir_lock(exp):   # while another process trains there, nothing is touched
        user_error(cli(*train_args(setup, exp)))
        assert all(tmp.is_file() for tmp in stale)
    again = cli(*train_args(setup, exp))
    assert again.exit_code == 0, again.output
    assert "removed 2 half-written checkpoint temp file(s) (3.0 MB) that a killed run left" in again.output
    assert not any(tmp.exists() for tmp in stale) and other.is_file()
    assert (exp / "best.pt").is_file() and (exp / "last.pt").is_file()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    exp = tmp_path / "exp"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import time
        from sertk.train.exp_lock import exp_dir_lock
        with exp_dir_lock({str(exp)!r}):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ExpDirBusy, match=f"being trained by process {holder.pid} "):
            with exp_dir_lock(exp):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exp_dir_lock(exp):   # the kernel released it with the process
        assert (exp / LOCK_FILE).read_text().startswith(f"process {os.getpid()} ")


def test_a_folder_sertk_did_not_make_gets_no_lock_file(setup, tmp_path, user_error):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    message = user_error(cli(*train_args(setup, folder)))
    assert "holds 'notes.txt', which no sertk run wrote" in message
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_only_the_holder_is_locked_out_not_ranks_that_do_not_take_it(tmp_path):
    exp = tmp_path / "exp"
    with exp_dir_lock(exp):
        with exp_dir_lock(exp, take=False):   # torchrun ranks above 0: rank 0 holds the lock for them
            pass
