"""The confusion matrix as a picture: a PNG beside RESULTS.md and each fold's scoring/, and the image TensorBoard
shows each epoch. Pillow only; sertk.score keeps the numbers and knows nothing of drawing."""
import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from sertk.fsutil import PNG_SOFTWARE, atomic_write_bytes

_CELL_MIN = 34
_PAD = 8
_DARK = np.array([33, 76, 140])  # shading of a row-normalised 1.0 cell (blue)


def _font():
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw, text: str, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _vertical_text(text: str, font):
    """`text` rendered on its own image and turned 90 degrees (reads bottom to top)."""
    from PIL import Image, ImageDraw
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    img = Image.new("RGB", (right - left + 2, bottom - top + 2), "white")
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, fill="black", font=font)
    return img.rotate(90, expand=True)


def _render(cm, classes: Sequence[str], title: str = ""):
    """The confusion matrix as a PIL image: counts in cells, shading by row-normalised fraction."""
    from PIL import Image, ImageDraw
    cm = np.asarray(cm, dtype=np.int64)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag", font)[1] + _PAD
    cell = max(_CELL_MIN, _text_size(probe, str(int(cm.max()) if cm.size else 0), font)[0] + 2 * _PAD)
    col_labels = [_vertical_text(c, font) for c in classes]
    ref_label = _vertical_text("reference", font)
    label_w = max(_text_size(probe, c, font)[0] for c in classes) + _PAD
    # top to bottom: title, "hypothesis", column names, grid; left to right: "reference", row names, grid
    axis_y = _PAD + (line_h if title else 0)
    top = axis_y + line_h + max(i.height for i in col_labels) + _PAD // 2
    left = _PAD + ref_label.width + _PAD // 2 + label_w
    n = len(classes)
    width = max(left + n * cell + _PAD, _text_size(probe, title, font)[0] + 2 * _PAD if title else 0)
    img = Image.new("RGB", (width, top + n * cell + _PAD), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((_PAD, _PAD), title, fill="black", font=font)
    draw.text((left, axis_y), "hypothesis", fill="black", font=font)
    img.paste(ref_label, (_PAD, top + max(0, (n * cell - ref_label.height) // 2)))
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    for j, label in enumerate(col_labels):
        img.paste(label, (left + j * cell + (cell - label.width) // 2, top - label.height - _PAD // 2))
    for i, name in enumerate(classes):
        y = top + i * cell
        draw.text((left - label_w, y + (cell - line_h + _PAD) // 2), name, fill="black", font=font)
        for j in range(n):
            _draw_cell(draw, (left + j * cell, y), cell, int(cm[i, j]), frac[i, j], font)
    return img


def _draw_cell(draw, xy, size: int, count: int, frac: float, font) -> None:
    x, y = xy
    fill = tuple(int(v) for v in np.round(255 - frac * (255 - _DARK)))
    draw.rectangle([x, y, x + size, y + size], fill=fill, outline=(160, 160, 160))
    w, h = _text_size(draw, str(count), font)
    draw.text((x + (size - w) // 2, y + (size - h) // 2), str(count),
              fill="white" if frac > 0.5 else "black", font=font, anchor="lt")


def confusion_image(cm, classes: Sequence[str], title: str = "") -> np.ndarray:
    """The confusion picture as an HWC uint8 array (for TensorBoard's `add_image(..., dataformats="HWC")`)."""
    return np.asarray(_render(cm, classes, title), dtype=np.uint8)


def save_confusion_png(cm, classes: Sequence[str], path, title: str = "", software: Optional[str] = None) -> None:
    """Write the confusion picture to `path` as PNG, atomically; `software`: its PNG Software text (what wrote
    it, so that a later run can tell its own picture from somebody's: sertk.fsutil.png_software)."""
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    if software is not None:
        info.add_text(PNG_SOFTWARE, software)
    buf = io.BytesIO()
    _render(cm, classes, title).save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(Path(path), buf.getvalue())
