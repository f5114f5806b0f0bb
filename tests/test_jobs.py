"""Job backends (`sertk jobs run`): JOB ranges, logs, failures; feature extraction split by speaker over
local jobs equals one command's; the slurm backend on a real single-node Slurm started here."""
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sertk.features.storage import load_feats
from sertk.jobs.slurm import read_slurm_config, sbatch_options
from sertk.errors import OutputError
from sertk.jobs.spec import JobError, header, is_job_log, job_values, make_jobs

FEATURES = {"sample_rate": 16000, "streams": {
    "logmel": {"type": "logmel", "n_mels": 16},
    "mfcc": {"type": "mfcc", "n_mfcc": 10, "n_mels": 16, "deltas": 1, "delta_axis": "coefficient"}}}
PY = sys.executable


def test_job_values_and_substitution():
    assert job_values("1:3") == ["1", "2", "3"] and job_values("2,5") == ["2", "5"]
    for bad in ("3:1", "a:2", ",", "1,1", "x y"):
        with pytest.raises(JobError):
            job_values(bad)
    jobs = make_jobs(["1", "2"], "log/x.JOB.log", ["prog", "--job", "JOB", "data/foldJOB"])
    assert [j.argv for j in jobs] == [["prog", "--job", "1", "data/fold1"], ["prog", "--job", "2", "data/fold2"]]
    assert [str(j.log) for j in jobs] == ["log/x.1.log", "log/x.2.log"]
    with pytest.raises(JobError, match="no JOB"):
        make_jobs(["1", "2"], "log/x.log", ["prog"])


def test_local_jobs_write_their_logs_and_failures_name_them(sertk_cli, tmp_path):
    log = tmp_path / "log" / "j.JOB.log"
    ok = sertk_cli("jobs", "run", "--max-jobs", "2", "JOB=1:3", log, "--", PY, "-c", "print('job', JOB * 2)")
    assert ok.exit_code == 0, ok.output
    for k in (1, 2, 3):
        text = (tmp_path / "log" / f"j.{k}.log").read_text()
        assert f"job {2 * k}\n" in text and text.startswith("# ") and "ended with exit status 0" in text
    bad = sertk_cli("jobs", "run", "JOB=1,2", log, "--", PY, "-c",
                    "import sys; print('went wrong in', JOB); sys.exit(JOB - 1)")
    assert bad.exit_code == 1
    assert "1 of 2 job(s) failed" in bad.output and f"{tmp_path / 'log' / 'j.2.log'}" in bad.output
    assert "went wrong in 2" in bad.output and "j.1.log" not in bad.output
    missing = sertk_cli("jobs", "run", tmp_path / "one.log", "--", str(tmp_path / "no-such-program"))
    assert missing.exit_code == 1 and "did not run: could not start" in missing.output
    assert sertk_cli("jobs", "run", "JOB=1:2").exit_code == 2   # no log, no command



def test_a_range_of_another_name_or_a_second_range_is_not_taken_for_the_log(sertk_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # where the stray log `FOO=1:2` used to be written
    for args in (["FOO=1:2", "f.FOO.log"], ["JOB=1:2", "JOB=1:3", "f.JOB.log"], ["SPLIT=a,b", "f.log"]):
        result = sertk_cli("jobs", "run", *args, "--", PY, "-c", "print(1)")
        assert result.exit_code == 2 and "only one range, named JOB, is taken" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_a_log_sertk_did_not_write_is_refused_and_left_as_it_was(sertk_cli, user_error, tmp_path):
    log = tmp_path / "log" / "j.JOB.log"
    first = sertk_cli("jobs", "run", "JOB=1:2", log, "--", PY, "-c", "print('run', JOB)")
    assert first.exit_code == 0, first.output
    mine = (tmp_path / "log" / "j.1.log").read_bytes()
    (tmp_path / "log" / "j.2.log").write_text("")     # empty: nothing to lose
    again = sertk_cli("jobs", "run", "JOB=1:2", log, "--", PY, "-c", "print('again', JOB)")
    assert again.exit_code == 0, again.output         # a recipe reruns its jobs under the same log names
    assert "again 1\n" in (tmp_path / "log" / "j.1.log").read_text()
    assert "again 2\n" in (tmp_path / "log" / "j.2.log").read_text()
    mine = (tmp_path / "log" / "j.1.log").read_bytes()
    notes = tmp_path / "log" / "j.2.log"
    for text in (b"my notes on the run\n", b"# a heading\nno start line\n", b"\x00\xff binary"):
        notes.write_bytes(text)
        message = user_error(sertk_cli("jobs", "run", "JOB=1:2", log, "--", PY, "-c", "print('third', JOB)"))
        assert message == (f"{notes}: exists and is not a job log written by sertk jobs run; refusing to replace "
                           "it (move it away or give another log path)")
        assert notes.read_bytes() == text
        assert (tmp_path / "log" / "j.1.log").read_bytes() == mine    # no job ran at all
    (tmp_path / "folder.log").mkdir()
    assert "folder.log: exists and is not a job log" in user_error(
        sertk_cli("jobs", "run", tmp_path / "folder.log", "--", PY, "-c", "pass"))


def test_a_log_header_is_recognised_whatever_the_command_holds(tmp_path):
    job = make_jobs(None, str(tmp_path / "x.log"), [PY, "-c", "print(1)\nprint(2)"])[0]
    job.log.write_text(header(job, "host") + "1\n2\n")
    assert is_job_log(job.log)
    job.log.write_text("# started at 2026-12-02 10:00:00 on host\n")   # no command line before it
    assert not is_job_log(job.log)


def test_the_slurm_backend_refuses_somebodys_log_before_submitting(tmp_path, monkeypatch):
    import sertk.jobs.slurm as slurm
    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(slurm.subprocess, "run", lambda *a, **k: pytest.fail("submitted"))
    notes = tmp_path / "s.1.log"
    notes.write_text("my notes\n")
    with pytest.raises(OutputError, match="s.1.log: exists and is not a job log"):
        slurm.run_slurm(make_jobs(["1"], str(tmp_path / "s.JOB.log"), ["true"]), {}, "sertk")
    assert notes.read_text() == "my notes\n"


def test_gpus_are_shared_out_among_running_jobs(sertk_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    log = tmp_path / "log" / "g.JOB.log"
    seen = lambda n: {line[4:] for k in range(1, n + 1)  # noqa: E731  (the GPUs each job was given)
                      for line in (tmp_path / "log" / f"g.{k}.log").read_text().splitlines() if line.startswith("gpu=")}
    show = ["--", PY, "-c", "import os, time; time.sleep(0.3); print('gpu=' + os.environ['CUDA_VISIBLE_DEVICES'])"]
    one_each = sertk_cli("jobs", "run", "--gpus", "1", "JOB=1:2", log, *show)
    assert one_each.exit_code == 0, one_each.output
    assert seen(2) == {"0", "1"}
    shared = sertk_cli("jobs", "run", "--gpus", "1", "--jobs-per-gpu", "2", "JOB=1:4", log, *show)
    assert shared.exit_code == 0, shared.output
    assert seen(4) == {"0", "1"}
    # four at once with one GPU each need four GPUs, or two per GPU
    too_many = sertk_cli("jobs", "run", "--gpus", "1", "JOB=1:4", log, *show)
    assert too_many.exit_code == 1 and "need 4 GPUs; this machine shows 2" in too_many.output
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert "need 2 GPUs; this machine shows 1" in sertk_cli("jobs", "run", "--gpus", "1", "--jobs-per-gpu", "2",
                                                             "JOB=1:4", log, *show).output
    slurm = sertk_cli("jobs", "run", "--backend", "slurm", "--jobs-per-gpu", "2", "JOB=1:2", log, *show)
    assert slurm.exit_code == 1 and "--jobs-per-gpu is for the local backend" in slurm.output


def test_cores_are_shared_out_over_jobs_and_their_processes(sertk_cli, tmp_path, monkeypatch):
    """torchrun keeps a set OMP_NUM_THREADS for every rank: a job of 2 ranks gets half a job's share each."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    log = tmp_path / "log" / "t.JOB.log"
    show = ["--", PY, "-c", "import os; print('threads=' + os.environ['OMP_NUM_THREADS'])"]
    threads = lambda: {line for k in (1, 2) for line in (tmp_path / "log" / f"t.{k}.log")  # noqa: E731
                       .read_text().splitlines() if line.startswith("threads=")}
    assert sertk_cli("jobs", "run", "--max-jobs", "2", "JOB=1:2", log, *show).exit_code == 0
    assert threads() == {"threads=4"}
    assert sertk_cli("jobs", "run", "--max-jobs", "2", "--procs-per-job", "2", "JOB=1:2", log, *show).exit_code == 0
    assert threads() == {"threads=2"}


def test_slurm_log_names_keep_a_percent_sign(tmp_path):
    """sbatch expands %j, %x ... in --output; a folder named run%j must stay itself."""
    from sertk.jobs.slurm import sbatch_argv
    job = make_jobs(["1"], str(tmp_path / "run%j" / "s.JOB.log"), ["true"])[0]
    assert f"--output={tmp_path}/run%%j/s.1.log" in sbatch_argv(job, "sertk", [])


def test_slot_gpus_follow_the_sharing(monkeypatch):
    from sertk.jobs.local import _gpu_slots
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert _gpu_slots(4, 1) == ["0", "1", "2", "3"]
    assert _gpu_slots(4, 1, 2) == ["0", "0", "1", "1"]
    assert _gpu_slots(3, 2, 2) == ["0,1", "0,1", "2,3"]
    assert _gpu_slots(10, 1, 10) == ["0"] * 10


def test_split_extraction_on_local_jobs_equals_one_command(sertk_cli, emodb_dir, tmp_path):
    conf = tmp_path / "feats.yaml"
    conf.write_text(yaml.safe_dump(FEATURES))
    whole, split = tmp_path / "whole", tmp_path / "split"
    # batches of 4: every speaker (7 utterances) is a block of its own; 4 speakers over 3 jobs
    assert sertk_cli("features", "extract", emodb_dir, whole, "--conf", conf, "--batch-size", "4").exit_code == 0
    extract = ["sertk", "features", "extract", str(emodb_dir), str(split), "--conf", str(conf), "--nj", "3",
               "--batch-size", "4"]
    early = sertk_cli(*extract[1:], "--merge")
    assert early.exit_code == 1 and "job 1 of 3 has not finished" in early.output
    jobs = sertk_cli("jobs", "run", "JOB=1:3", tmp_path / "log" / "extract.JOB.log", "--", *extract, "--job", "JOB")
    assert jobs.exit_code == 0, jobs.output
    again = sertk_cli(*extract[1:], "--job", "2")
    assert "already done; skipped" in again.output
    merged = sertk_cli(*extract[1:], "--merge")
    assert merged.exit_code == 0, merged.output
    assert "merged from 3 separate jobs" in merged.output and not (tmp_path / "split.split3").exists()
    records = [yaml.safe_load((d / "features.yaml").read_text()) for d in (whole, split)]
    for record in records:
        del record["dump"]["ark_bytes"]   # one ark against three: the same features, in other files
    assert records[0] == records[1]
    for stream in FEATURES["streams"]:
        a, b = load_feats(whole, stream), load_feats(split, stream)
        assert sorted(a) == sorted(b)
        for utt in a:
            np.testing.assert_array_equal(a[utt], b[utt])
        # each job's ark holds whole speakers
        utt2spk = dict(line.split() for line in (emodb_dir / "utt2spk").read_text().splitlines())
        arks = {}
        for line in (split / stream / "feats.scp").read_text().splitlines():
            utt, where = line.split()
            arks.setdefault(Path(where.rsplit(":", 1)[0]).name, set()).add(utt2spk[utt])
        assert len(arks) == 3 and sum(len(s) for s in arks.values()) == 4
    assert "up to date" in sertk_cli(*extract[1:], "--merge").output
    assert "jobs are numbered 1..3" in sertk_cli(*extract[1:-4], "--nj", "3", "--job", "4").output
    assert sertk_cli(*extract[1:], "--job", "1", "--merge").exit_code == 2


def test_jobs_cut_at_another_batch_size_are_not_merged_and_a_failed_merge_keeps_the_arks(sertk_cli, emodb_dir,
                                                                                           tmp_path, monkeypatch):
    """The batch size decides which speakers each job gets: a job done at another size would leave utterances
    out of the merge or repeat them. A merge that fails must not lose the jobs' arks."""
    conf = tmp_path / "feats.yaml"
    conf.write_text(yaml.safe_dump(FEATURES))
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert sertk_cli("features", "extract", emodb_dir, whole, "--conf", conf, "--batch-size", "4").exit_code == 0
    extract = ["features", "extract", str(emodb_dir), str(split), "--conf", str(conf), "--nj", "3"]
    assert sertk_cli(*extract, "--batch-size", "8", "--job", "1").exit_code == 0   # blocks of two speakers
    for job in ("2", "3"):
        assert sertk_cli(*extract, "--batch-size", "4", "--job", job).exit_code == 0
    early = sertk_cli(*extract, "--batch-size", "4", "--merge")
    assert early.exit_code == 1 and "job 1 of 3 has not finished" in early.output and "--batch-size" in early.output
    again = sertk_cli(*extract, "--batch-size", "4", "--job", "1")
    assert again.exit_code == 0 and "already done" not in again.output
    import sertk.features.split as split_module

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(split_module, "finish_dump", disk_full)
        with pytest.raises(OSError):
            split_module.merge_jobs(split_module.Request.make(emodb_dir, FEATURES, split, 3, "cpu", 4, "test"), 3)
    assert len(list((tmp_path / "split.split3").glob("job*/*/*.ark"))) == 3 * len(FEATURES["streams"])
    merged = sertk_cli(*extract, "--batch-size", "4", "--merge")
    assert merged.exit_code == 0, merged.output
    for stream in FEATURES["streams"]:
        a, b = load_feats(whole, stream), load_feats(split, stream)
        assert sorted(a) == sorted(b)
        for utt in a:
            np.testing.assert_array_equal(a[utt], b[utt])


def test_slurm_options_from_yaml(tmp_path):
    conf = tmp_path / "slurm.yaml"
    conf.write_text("sbatch: {time: '1:00:00', mem: 4G, exclusive: true, partition: null}\n"
                    "gpu: {gres: 'gpu:{gpus}'}\nkinds: {train: {time: '2:00:00'}}\n")
    config = read_slurm_config(conf)
    assert sbatch_options(config, "train", 2) == ["--time=2:00:00", "--mem=4G", "--exclusive", "--gres=gpu:2"]
    assert sbatch_options(config, "extract", 0) == ["--time=1:00:00", "--mem=4G", "--exclusive"]
    conf.write_text("sbatch: {time: [1]}\n")
    with pytest.raises(JobError, match="single values"):
        read_slurm_config(conf)
    conf.write_text("partition: x\n")
    with pytest.raises(JobError, match="unknown section"):
        read_slurm_config(conf)


def test_slurm_backend_runs_jobs_and_reports_failures(slurm, sertk_cli, tmp_path, monkeypatch):
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    conf = tmp_path / "slurm.yaml"
    conf.write_text("sbatch: {time: '0:10:00', cpus-per-task: 1}\n")
    log = tmp_path / "log" / "s.JOB.log"
    run = ["jobs", "run", "--backend", "slurm", "--slurm-conf", conf, "--name", "sertk-test"]
    ok = sertk_cli(*run, "JOB=1:2", log, "--", PY, "-c", "import os; print('job', JOB, os.environ['SLURM_CLUSTER_NAME'])")
    assert ok.exit_code == 0, ok.output
    for k in (1, 2):
        text = (tmp_path / "log" / f"s.{k}.log").read_text()
        assert f"job {k} sertktest" in text and "(slurm job" in text and "ended with exit status 0" in text
    bad = sertk_cli(*run, "JOB=1,2", log, "--", PY, "-c", "import sys; print('oops', JOB); sys.exit(JOB % 2 * 3)")
    assert bad.exit_code == 1 and "1 of 2 job(s) failed:" in bad.output
    assert "job JOB=1 failed (exit status 3)" in bad.output and str(tmp_path / "log" / "s.1.log") in bad.output
    assert "oops 1" in bad.output
    conf.write_text("sbatch: {partition: no-such-partition}\n")
    refused = sertk_cli(*run, "JOB=1:1", log, "--", PY, "-c", "pass")
    assert refused.exit_code == 1 and "sbatch refused it" in refused.output and "partition" in refused.output
