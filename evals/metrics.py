"""Per-step metrics to metrics.jsonl and TensorBoard, phase timing, and PNG plots of the curves."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path


class PhaseTimer:
    """Wall-clock seconds per named phase of the current step: `with timer("update"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        out, self.seconds = {f"time/{k}": v for k, v in self.seconds.items()}, {}
        return out


class MetricsLog:
    """Appends one JSON object per record to <folder>/metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "metrics.jsonl"
        self.tensorboard = SummaryWriter(str(self.folder / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for key, value in values.items():
            self.tensorboard.add_scalar(key, value, step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop records past the checkpoint so the log reads as one uninterrupted run."""
        if self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines() if json.loads(ln)["step"] <= step]
            self.path.write_text("".join(ln + "\n" for ln in kept))

    def close(self) -> None:
        self.tensorboard.close()


@contextmanager
def png(path: Path, figsize: tuple[float, float], panels: int = 1, dpi: int = 110):
    """`with png(path, size, panels) as axes:` draw on axes (one row of `panels`); written as a PNG on exit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, panels, figsize=figsize, squeeze=False)
    try:
        yield list(axes[0])
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def plot_curves(records: list[dict], keys: list[str], out: Path, title: str) -> None:
    """One panel per key, value against step, written as a PNG."""
    keys = [k for k in keys if any(k in r for r in records)]
    with png(out, (4.5 * len(keys), 3.5), len(keys), dpi=100) as axes:
        for ax, key in zip(axes, keys):
            points = [(r["step"], r[key]) for r in records if key in r]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
            ax.set_xlabel("step")
            ax.set_title(key)
            ax.grid(alpha=0.3)
        axes[0].figure.suptitle(title)
