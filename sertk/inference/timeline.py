"""The emotion timeline of one recording: class posteriors over time, with the chunks marked (PNG).

Top: the class posteriors stacked (they sum to 1) over every chunk the recording was cut into, window by
window: each model window owns the stretch of the chunk nearest its centre, so a chunk's colours change
where its windows disagree. Gaps are the non-speech the chunks leave out. Bottom: each chunk as a bar in
the colour of its decided class. Needs matplotlib (pip install 'sertk[infer]').

The file name must end in .png. The picture says in its PNG text that sertk infer drew it (Software), and an
existing file is replaced only when it says so: anything else there is somebody's file, refused before any work.
"""
import importlib.util
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from sertk.errors import SertkError
from sertk.fsutil import atomic_write_bytes, check_file_replaceable, png_software
from sertk.inference.run import Row


SOFTWARE = "sertk infer --timeline"   # the picture's PNG Software text: what check_timeline recognises


def check_timeline(path: Path) -> None:
    """Raise unless `path` names a PNG file that is absent or a timeline sertk drew before."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise SertkError(f"--timeline {path}: the file name must end in .png (the timeline is a PNG picture)")
    check_file_replaceable(path, "a timeline drawn by sertk infer", lambda p: png_software(p) == SOFTWARE,
                           "move it away or give another --timeline")
    if importlib.util.find_spec("matplotlib") is None:   # said now, not after every file has been decided
        _pyplot()


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SertkError("--timeline needs matplotlib: pip install 'sertk[infer]'") from None
    matplotlib.use("Agg")   # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def _clock(seconds: float, _pos=None) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def draw_timeline(rows: Sequence[Row], classes: Sequence[str], duration: float, path: Path, title: str = "") -> None:
    """Write the timeline of `rows` (the chunks of one recording, in time order) to `path` as PNG."""
    check_timeline(path)
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(classes))]
    fig, (ax, bars) = plt.subplots(2, 1, sharex=True, figsize=(min(24.0, 8.0 + duration / 30.0), 4.8),
                                   gridspec_kw={"height_ratios": [5, 1]})
    lefts, widths, post = [], [], []
    for row in rows:
        centres = row.start + row.decision.segment_times.mean(axis=1)
        edges = np.concatenate([[row.start], (centres[1:] + centres[:-1]) / 2, [row.end]])
        lefts.append(edges[:-1])
        widths.append(np.diff(edges))
        post.append(row.decision.segment_posteriors)
        bars.broken_barh([(row.start, row.end - row.start)], (0, 1),
                         color=colours[classes.index(row.decision.label)])
    lefts, widths, post = np.concatenate(lefts), np.concatenate(widths), np.concatenate(post)
    bottom = np.zeros(len(lefts))
    for c, colour in enumerate(colours):   # one call per class, however long the recording
        ax.bar(lefts, post[:, c], width=widths, bottom=bottom, align="edge", color=colour, linewidth=0)
        bottom += post[:, c]
    ax.set_ylim(0, 1)
    ax.set_ylabel("posterior")
    ax.set_xlim(0, duration)
    ax.legend([plt.Line2D([], [], color=c, linewidth=3) for c in colours], classes, loc="upper left",
              bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or "emotion timeline")
    bars.set_yticks([])
    bars.set_ylabel("chunk", rotation=0, ha="right", va="center")
    bars.xaxis.set_major_formatter(FuncFormatter(_clock))
    bars.set_xlabel("time (top: posteriors per model window; bottom: each chunk's decided class)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": SOFTWARE})
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
