"""Training throughput and memory of the baseline and each seed model on real EmoDB features, the old
code path beside the new one in the same run: training segments per second, their ratio, peak memory,
and the share of step time spent waiting for the data loader, from the trainer's own epoch timing
(`sertk train` logs the same figures every epoch).

    python benchmarks/train.py --emodb ../shared/corpora/emodb [--models crnn,mpaf_cnn,...]
                               [--paths old,new] [--device cpu|cuda] [--train-utts 160] [--dev-utts 40]
                               [--concurrent 1,4,16] [--profile]

Paths: `old` is float32 with attention dropout on torch's plain SDPA path, LSTMs on packed sequences,
SD-CAFF's DyReLU-B as the max of a [B, C, K, H, T] tensor and MSFPN's windowed attention one offset at a time
(what sertk did before `train.amp: auto`); `new` is the default now: `train.amp: auto` (bfloat16 autocast
where the CPU has AMX or AVX512-BF16, or on a GPU), the fast attention-dropout path, LSTMs on the padded batch
(sertk.models.sequence.run_lstm), DyReLU-B's max in its ReLU form (sertk.models.sd_caff.DYRELU_MAX), MSFPN's
windowed attention as blocked matrix products (sertk.models.transformer.BANDED_ATTENTION) and, for the models
that declare it, 2-D convolutions in channels-last layout (sertk.train.trainer). Each model keeps its recipe
config otherwise, so a config that says `amp: false` stays float32 on both paths unless --force-amp is given.
The header prints the CPU model and its native-bf16 flags.

It uses egs/emodb's data dirs and feature dumps (prepared and extracted here first when missing:
`sertk features extract` skips a dump that is up to date), and trains each model for 3 epochs on a
subset of LOSO fold 1 (--train-utts training and --dev-utts dev utterances, spread over the fold's
speakers); the figures are those of epochs 2 and 3 together (epoch 1 warms up). Each run is a process
of its own, so its peak memory is its own: on the CPU the peak resident set size of the whole process
(torch, features in memory, model, activations), on a GPU torch's peak allocated CUDA memory.

--concurrent N1,N2,...: each path is also run as N identical processes at once on the same device (a GPU
shared by N folds, as `./run.sh --jobs_per_gpu N` does); the row gives the median process's segments/s
and, under "vs old", the N processes' sum against one process alone ("aggregate"); one process alone is
always run. --profile: one process
per (model, path) runs under torch.profiler, and the operations taking most of its time (CUDA time on a
GPU, CPU time on a CPU) are printed after its row.
"""
import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "emodb"
MODELS = ("crnn", "mpaf_cnn", "sd_caff", "strl_ser", "esernet", "msfpn_logmel")


def conf_file(kind: str, name: str) -> Path:
    own = RECIPE / "conf" / kind / f"{name}.yaml"
    return own if own.is_file() else REPO / "egs" / "TEMPLATE" / "conf" / kind / f"{name}.yaml"


def prepare(emodb: Path) -> Path:
    """egs/emodb/data/all and its LOSO folds, made as stage 1 makes them when missing."""
    from sertk.data.corpora import prepare_corpus
    from sertk.data.datadir import DataDir
    from sertk.data.protocols import make_folds
    data = RECIPE / "data"
    if not (data / "loso" / "protocol.yaml").is_file():
        if emodb is None and not (data / "all" / "utt2emo").is_file():
            sys.exit(f"benchmarks/train.py: {data} has no EmoDB data dir yet: give --emodb <the EmoDB release>")
        dd = DataDir.load(data / "all") if (data / "all" / "utt2emo").is_file() else \
            prepare_corpus("emodb", emodb, data / "all").datadir
        make_folds(dd, "loso", data / "loso")
    return data


def spread(dd, n: int):
    """n utterances taken round-robin over the speakers (sorted ids), so every speaker is in the subset."""
    by_speaker = [list(utts) for _, utts in sorted(dd.spk2utt.items())]
    chosen = []
    while len(chosen) < min(n, len(dd.utts)):
        for utts in by_speaker:
            if utts and len(chosen) < n:
                chosen.append(utts.pop(0))
    return dd.select(chosen)


def one_run(args) -> None:
    """In the child process: train, then print the epoch-2 figures as JSON."""
    import torch
    from sertk.config.loading import load_config
    from sertk.train.trainer import train
    from sertk.models import dropout_attention, sd_caff, sequence, transformer
    from sertk.train import trainer
    overrides = ["train.epochs=3", "train.patience=10", "train.min_epochs=1"]
    if args.path == "old":
        overrides.append("train.amp=false")
        dropout_attention.FAST_CPU_DROPOUT_ATTENTION = False
        sequence.PADDED_LSTM = False
        trainer.CHANNELS_LAST = False
        sd_caff.DYRELU_MAX = "amax"
        transformer.BANDED_ATTENTION = "offsets"
    elif args.force_amp:
        overrides.append("train.amp=auto")
    config = load_config(Path(args.config), overrides)
    from torch.profiler import ProfilerActivity, profile
    cuda = args.device.startswith("cuda")
    profiler = (profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
                if args.profile else contextlib.nullcontext())
    with profiler as prof:
        train(config, Path(args.fold), Path(args.dump), Path(args.exp), args.device)
    if args.profile:
        table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                          row_limit=15)
        (Path(args.exp) / "profile.txt").write_text(table)
    timed = torch.load(Path(args.exp) / "last.pt", weights_only=True)["history"][1:]
    seconds = sum(e["seconds"] for e in timed)
    epoch = {"train_segments": timed[0]["train_segments"], "seconds": seconds / len(timed),
             "segments_per_second": sum(e["train_segments"] for e in timed) / seconds,
             "data_wait_share": sum(e["data_wait_share"] * e["seconds"] for e in timed) / seconds}
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    autocast = torch.load(Path(args.exp) / "last.pt", weights_only=False)["autocast"]
    print(json.dumps({**epoch, "peak_mib": round(peak, 1), "autocast": autocast or "float32"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emodb", type=Path, help="EmoDB release (only needed when egs/emodb/data is missing)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paths", default="old,new", help="old, new or old,new (see above)")
    parser.add_argument("--force-amp", action="store_true",
                        help="new path: train.amp auto even where the model's config says false")
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--train-utts", type=int, default=160)
    parser.add_argument("--dev-utts", type=int, default=40)
    parser.add_argument("--concurrent", default="1",
                        help="comma-separated process counts: N identical runs at once on the device (see above)")
    parser.add_argument("--profile", action="store_true", help="print the top operations of one run (see above)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    for name in ("config", "fold", "dump", "exp"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_run(args)

    import torch
    from sertk.data.datadir import DataDir
    from sertk.features.extract import extract_features, load_config as load_features
    from sertk.config.loading import load_config
    data = prepare(args.emodb)
    work = Path(tempfile.mkdtemp(prefix="sertk-train-bench-"))
    fold = work / "fold1"
    for part, n in (("train", args.train_utts), ("dev", args.dev_utts)):
        spread(DataDir.load(data / "loso" / "fold1" / part), n).save(fold / part)
    from sertk.train.precision import native_bf16_cpu_flags
    from sertk.envinfo import cpu_model
    cpu = cpu_model() or "unknown CPU"
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{cpu}, {torch.get_num_threads()} threads"
    print(f"# {device}; native bf16 CPU flags: {', '.join(native_bf16_cpu_flags()) or 'none'}; "
          f"torch {torch.__version__}; python {platform.python_version()}")
    print(f"# EmoDB LOSO fold 1 subset: {args.train_utts} train / {args.dev_utts} dev utterances; epochs 2-3 of 3")
    paths = args.paths.split(",")
    counts = sorted({1} | {int(n) for n in args.concurrent.split(",")})   # 1: the reference of every ratio
    print("| model | features | path | precision | train segments | segments/s | vs old | data wait | epoch s | "
          "peak memory (MiB) |")   # epoch s: mean of epochs 2 and 3
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run, model in enumerate(args.models.split(",")):
        config_path = conf_file("models", model)
        tag = load_config(config_path)["features"]["tag"]
        dump = RECIPE / "dump" / tag
        extract_features(data / "all", load_features(conf_file("features", tag)), dump, device=args.device)
        speed = {}
        for path in paths:
            child = [sys.executable, __file__, "--one", "--config", str(config_path), "--fold", str(fold),
                     "--dump", str(dump), "--device", args.device, "--path", path,
                     *(["--force-amp"] if args.force_amp else [])]
            for n in counts:
                exps = [work / f"{run}_{model}_{path}_{n}x{i}" for i in range(n)]
                logs = [(work / f"{exp.name}.out", work / f"{exp.name}.err") for exp in exps]   # files: no pipe fills
                procs = []
                for exp, (out, err) in zip(exps, logs):
                    with open(out, "w") as out_file, open(err, "w") as err_file:   # the child keeps its own copies
                        procs.append(subprocess.Popen(child + ["--exp", str(exp)], stdout=out_file, stderr=err_file))
                outs = [(p.wait(), out.read_text(), err.read_text()) for p, (out, err) in zip(procs, logs)]
                failed = [err.strip().splitlines()[-1:] for code, _, err in outs if code != 0]
                label = path if n == 1 else f"{path}, {n} at once"
                if failed:
                    print(f"| {model} | {tag} | {label} | failed: {failed[0]} |")
                    continue
                rs = sorted((json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs),
                            key=lambda r: r["segments_per_second"])
                r = rs[(len(rs) - 1) // 2]   # the median process (the slower middle one of an even count)
                if n == 1:
                    speed[path] = r["segments_per_second"]
                    ratio = f"{speed[path] / speed['old']:.2f}x" if "old" in speed and path != "old" else ""
                else:
                    total = sum(x["segments_per_second"] for x in rs)
                    ratio = (f"aggregate {total:.1f}: {total / speed[path]:.2f}x one alone" if path in speed
                             else f"aggregate {total:.1f}")
                print(f"| {model} | {tag} | {label} | {r['autocast']} | {r['train_segments']} | "
                      f"{r['segments_per_second']:.1f} | {ratio} | {100 * r['data_wait_share']:.1f} % | "
                      f"{r['seconds']:.1f} | {r['peak_mib']:.0f} |", flush=True)
            if args.profile:   # a run of its own: the profiler's overhead stays out of the figures above
                exp = work / f"{run}_{model}_{path}_profile"
                done = subprocess.run(child + ["--exp", str(exp), "--profile"], capture_output=True, text=True)
                print(f"\n{model}, {path} path, profiled:\n```\n" + ((exp / "profile.txt").read_text() if
                      done.returncode == 0 else done.stderr.strip()[-500:]) + "\n```\n", flush=True)


if __name__ == "__main__":
    main()
