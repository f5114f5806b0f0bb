"""Feature extraction as separate jobs, one group of speakers each (Kaldi's split_data.sh habit), for job
backends that run them on other machines (`sertk jobs run`, the recipes' cmd.sh):

    sertk features extract DATA DUMP --conf C --nj N --job K     # K = 1..N, in any order, anywhere
    sertk features extract DATA DUMP --conf C --nj N --merge     # once all N have finished

Blocks of whole speakers (`Request.blocks`) are shared out over the jobs by audio length. Job K writes its arks and a record of what it
did into <dump>.split<N>/job<K>/ beside the dump; the merge links the arks into the dump and writes its
index, exactly as an extraction in one command would (batches never cross a block, so every utterance
is computed in the same batch either way), then removes the split folder; a merge that fails leaves the jobs'
arks where they were. A finished job is not run again; its record names its share of the utterances and the
--batch-size that cut the blocks, so a job run with another size is run again, never merged beside the others.
A job meeting bad audio among its utterances fails as one command would (every bad file of its part logged,
counted in one error line) and records nothing, so the merge names it as unfinished.
"""
import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

from sertk.errors import FeatureError
from sertk.features import storage
from sertk.features.extract import Request
from sertk.features.extract_jobs import JobResult, run_job
from sertk.features.extract_report import ExtractReport, fail_on_bad_audio, finish_dump, log_audio_issues
from sertk.features.preprocess import PreprocessStats
from sertk.features.streams import build_frontends
from sertk.fsutil import atomic_output_dir, atomic_write_text, owned_by

DONE_FILE = "done.json"


def split_dir(out_dir: Path, nj: int) -> Path:
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f"{out_dir.name}.split{nj}"


def speaker_groups(request: Request, nj: int) -> List[List[List[str]]]:
    """The speaker blocks of each job (Request.blocks: whole speakers), the block with the most audio first
    to the job with the least so far. A job past the number of blocks gets nothing to do."""
    seconds = request.durations()
    groups: List[List[List[str]]] = [[] for _ in range(nj)]
    load = [0.0] * nj
    for block in sorted(request.blocks(), key=lambda b: (-sum(seconds[u] for u in b), b[0])):
        j = load.index(min(load))
        groups[j].append(block)
        load[j] += sum(seconds[u] for u in block)
    return groups


def extract_job(request: Request, nj: int, job: int) -> str:
    """Run job `job` of `nj` (1-based) unless the dump is up to date or the job is done; says what it did."""
    if not 1 <= job <= nj:
        raise FeatureError(f"--job {job}: jobs are numbered 1..{nj} (--nj)")
    if request.previous is not None:
        return f"{request.out_dir}: up to date (same config and utterances); job {job} has nothing to do"
    blocks = speaker_groups(request, nj)[job - 1]
    utts = [u for block in blocks for u in block]
    part = split_dir(request.out_dir, nj) / f"job{job}"
    if _done(part, request, utts) is not None:
        return f"{part}: already done; skipped"
    if not utts:
        return f"job {job} of {nj}: no speakers left for it (the data dir has fewer speaker blocks than jobs)"
    streams = build_frontends(request.cfg)
    with atomic_output_dir(part, "feature extraction job", owned_by(storage.DUMP_FILES + (DONE_FILE,))) as tmp:
        for name in request.cfg.streams:
            (tmp / name).mkdir()
        known_bad = request.bad_audio.keys() & set(utts)   # header reads for batching
        result = run_job(request.job(job, request.batches(blocks), streams, tmp, check_only=bool(known_bad)))
        fail_on_bad_audio(request.bad_audio, [result], len(utts), utts)
        log_audio_issues([result])
        atomic_write_text(tmp / DONE_FILE, json.dumps({"stamp": _stamp(request, utts), "result": _to_json(result)}))
    issues = Counter(kind for _, kind, _ in result.audio_issues)
    counted = "".join(f"; {n} {kind.replace('_', ' ')} (logged)" for kind, n in sorted(issues.items()))
    return f"{part}: {len(utts)} utterances of {len({request.dd.utt2spk[u] for u in utts})} speaker(s){counted}"


def merge_jobs(request: Request, nj: int) -> ExtractReport:
    """The dump from the finished jobs; a job that has not finished (or ran for another config or another
    data dir) is named, with what to do."""
    if request.previous is not None:
        return request.previous
    folder = split_dir(request.out_dir, nj)
    groups = speaker_groups(request, nj)
    results = []
    for job, blocks in enumerate(groups, start=1):
        if not blocks:
            continue
        result = _done(folder / f"job{job}", request, [u for block in blocks for u in block])
        if result is None:
            raise FeatureError(f"feature extraction job {job} of {nj} has not finished (no up-to-date "
                               f"{folder / f'job{job}' / DONE_FILE}: not run, or run for another config, data "
                               f"dir or --batch-size); run `sertk features extract ... --nj {nj} --job {job}` first")
        results.append((job, result))
    _check_coverage(request, [r for _, r in results], nj)
    with atomic_output_dir(request.out_dir, "feature dump", storage.owns_feature_dump) as tmp:
        for name in request.cfg.streams:
            (tmp / name).mkdir()
            for job, _ in results:
                # linked, not moved: a merge that fails (or is killed) leaves the jobs' arks where they were
                _link_or_copy(folder / f"job{job}" / name / storage.ark_name(job), tmp / name / storage.ark_name(job))
        report = finish_dump(tmp, request.out_dir, request.cfg, [r for _, r in results], request.checksum)
    shutil.rmtree(folder, ignore_errors=True)
    report.nj, report.device, report.merged = len(results), request.device, True
    return report


def _stamp(request: Request, utts: List[str]) -> Dict[str, Any]:
    """What a job's output belongs to: the config, the very same utterances, and its share of them with the
    batch size that cut it (blocks of speakers hold a batch each, so another --batch-size gives jobs other
    speakers: a job done at one size would leave some utterances out of the merge, or repeat them)."""
    share = hashlib.sha256("\n".join(utts).encode()).hexdigest()
    return {"config": request.cfg.to_dict(), "utt_checksum": request.checksum, "job_utts": share,
            "batch_size": request.batch_size}


def _done(part: Path, request: Request, utts: List[str]):
    """The result a finished job recorded for this request and share of utterances, else None."""
    try:
        doc = json.loads((part / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if doc.get("stamp") != json.loads(json.dumps(_stamp(request, utts))):
        return None
    return _from_json(doc["result"])


def _check_coverage(request: Request, results: List[JobResult], nj: int) -> None:
    """Every utterance in the jobs' results exactly once (a safety net under the stamps)."""
    for stream in request.cfg.streams:
        counts = Counter(entry[0] for r in results for entry in r.entries.get(stream, []))
        missing = [u for u in request.dd.utts if u not in counts]
        repeated = sorted(u for u, n in counts.items() if n > 1)
        if missing or repeated:
            raise FeatureError(f"the finished jobs' stream '{stream}' lacks {len(missing)} utterance(s) "
                               f"{missing[:3]} and repeats {len(repeated)} {repeated[:3]}; remove "
                               f"{split_dir(request.out_dir, nj)} and run the jobs again")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:   # no hard links here (another file system, or one without them)
        shutil.copyfile(source, target)


def _to_json(result: JobResult) -> Dict[str, Any]:
    return {"entries": result.entries, "dims": result.dims, "samples": result.samples,
            "load_seconds": result.load_seconds, "stream_seconds": result.stream_seconds,
            "preprocess": vars(result.preprocess), "stream_counts": result.stream_counts,
            "audio_issues": result.audio_issues}


def _from_json(doc: Dict[str, Any]) -> JobResult:
    return JobResult({s: [tuple(e) for e in entries] for s, entries in doc["entries"].items()}, doc["dims"],
                     doc["samples"], doc["load_seconds"], doc["stream_seconds"], PreprocessStats(**doc["preprocess"]),
                     doc["stream_counts"], audio_issues=doc.get("audio_issues", []))   # older jobs recorded none
