"""What a training run draws: its curves and samples of its valid images with their boxes."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from stampcheck.atomic import atomic_path
from stampcheck.train.data import MEAN, STD
from stampcheck.engine.scores import METRIC_KEYS


def current_figure_png() -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.gcf().savefig(buf, format="png", dpi=100)
    plt.close("all")
    return buf.getvalue()


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "valid_loss"):
        ax1.plot(epochs, [h.get(key) for h in history], marker="o", label=key)
    ax1.set_xlabel("epoch"); ax1.set_title("loss"); ax1.legend()
    for key in (*METRIC_KEYS, "threshold"):
        ax2.plot(epochs, [h.get(key) for h in history], marker=".", label=key, ls="--" if key == "threshold" else "-")
    ax2.set_xlabel("epoch"); ax2.set_ylim(0, 1.02); ax2.set_title("valid metrics (each epoch at its best threshold)")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


@torch.no_grad()
def plot_samples(model, dl, n_classes: int, device, threshold: float, path: Path, n: int = 12) -> None:
    """Valid images with true boxes (green) and the top predicted box (red, or orange below the
    threshold; its score at the top left), under a legend of the colours."""
    from PIL import Image, ImageDraw

    from stampcheck.draw import draw_boxes, font
    from stampcheck.train.detect import detect, plain, to_pixels

    model.eval()
    xb, boxes, labels = next(iter(dl))
    xb, boxes, labels = plain(xb)[:n], plain(boxes)[:n], plain(labels)[:n]
    found = detect(model(xb).float(), n_classes, threshold)
    mean = torch.tensor(MEAN, device=xb.device)[:, None, None]
    std = torch.tensor(STD, device=xb.device)[:, None, None]
    tiles = []
    for b in range(len(xb)):
        arr = ((xb[b].float() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
        h, w = arr.shape[:2]
        truth = [to_pixels(box, w, h) for box, lab in zip(boxes[b], labels[b]) if lab > 0]
        img = draw_boxes(Image.fromarray(arr), truth)
        f = found[b]
        colour = (255, 40, 40) if f["score"] >= threshold else (255, 200, 0)
        img = draw_boxes(img, [to_pixels(f["box"], w, h)], colour=colour)
        ImageDraw.Draw(img).text((3, 3), f"{f['score']:.2f}", fill=colour, font=font(14))
        tiles.append(img)
    cols = 4
    size = tiles[0].size
    legend = 60  # a line a colour: tiles of a small --size leave no room for them side by side
    grid = Image.new("RGB", (cols * size[0], ((len(tiles) + cols - 1) // cols) * size[1] + legend), "white")
    for k, t in enumerate(tiles):
        grid.paste(t, ((k % cols) * size[0], legend + (k // cols) * size[1]))
    draw = ImageDraw.Draw(grid)
    for y, (colour, words) in zip((4, 22, 40), (((0, 230, 0), "labelled stamp"),
                                                ((255, 40, 40), f"found: score >= {threshold:.2f}"),
                                                ((255, 200, 0), "best guess, below it"))):
        draw.rectangle((4, y, 16, y + 12), outline=colour, width=3)
        draw.text((22, y - 1), words, fill=(0, 0, 0), font=font(12))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
