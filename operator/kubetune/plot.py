"""`kubetune plot ftj/NAME`: a FineTuneJob's loss curves, from `status.progress.history`.

In the terminal (plotext) by default, or as a PNG with `-o FILE` (matplotlib); both from the `plot` extra
(`pip install 'kubetune[plot]'`). It works while the job trains (the launcher updates the history every
progress interval) and after it finished (the history stays in the status).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kubetune.status import curves

PNG_SIZE = (1200, 700)  # pixels
KINDS = {"ftj", "finetunejob", "finetunejobs", "finetunejob.kubetune.io", "finetunejobs.kubetune.io"}
MISSING_EXTRA = "kubetune plot needs the plot extra: pip install 'kubetune[plot]'"


def parse_target(text: str) -> str:
    """`ftj/NAME` (or `finetunejob/NAME`, or NAME) -> NAME."""
    kind, _, name = text.rpartition("/")
    if kind and kind.lower() not in KINDS:
        raise ValueError(f"{text}: kubetune plot draws FineTuneJobs (ftj/NAME)")
    if not name:
        raise ValueError(f"{text}: name the FineTuneJob, as ftj/NAME")
    return name


def series(points: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    chosen = [p for p in points if isinstance(p.get(key), int | float)]
    return [p["step"] for p in chosen], [float(p[key]) for p in chosen]


def summary(finetunejob: dict[str, Any]) -> list[str]:
    """The lines printed under the chart: where the run is, the best evaluation, the over-fitting verdict."""
    status = finetunejob.get("status") or {}
    progress = status.get("progress") or {}
    name = finetunejob.get("metadata", {}).get("name", "?")
    lines = [f"{name}: {status.get('phase', 'Pending')}, step {progress.get('step', 0)}"]
    lines[0] += f" of {progress['totalSteps']}" if progress.get("totalSteps") else ""
    if "loss" in progress:
        lines[0] += f", loss {progress['loss']:.4g}"
    best = curves.best_evaluation(curves.history(progress))
    if progress.get("bestEvalLoss") is not None:
        lines.append(f"best eval loss {progress['bestEvalLoss']:.4g} at step {progress.get('bestEvalStep')}")
    elif best is not None:
        lines.append(f"best eval loss {best['evalLoss']:.4g} at step {best['step']}")
    checkpoint = (status.get("output") or {}).get("bestCheckpoint")
    if checkpoint:
        lines.append(f"best checkpoint: {checkpoint}")
    for condition in status.get("conditions") or []:
        if condition.get("type") == curves.CONDITION and condition.get("status") == "True":
            lines.append(f"Overfitting: {condition.get('message', '')}")
    return lines


def _title(finetunejob: dict[str, Any]) -> str:
    meta = finetunejob.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '?')}: loss".lstrip("/")


def terminal_chart(
    finetunejob: dict[str, Any], width: int = 100, height: int = 24, color: bool = False
) -> str:
    """The train and eval loss against the step, drawn in text."""
    try:
        import plotext
    except ImportError as missing:
        raise RuntimeError(MISSING_EXTRA) from missing
    points = curves.history((finetunejob.get("status") or {}).get("progress"))
    figure = plotext.figure
    figure.clear.all()
    figure.plot_size(width, height)
    figure.theme("default" if color else "clear")
    for key, label, marker in (("loss", "train loss", "braille"), ("evalLoss", "eval loss", "x")):
        steps, losses = series(points, key)
        if steps:
            figure.draw(figure.signal(steps, losses, marker=marker).label(label).lines())
    # A legend box would hide the start of the curves: the title says which is which.
    figure.legend(active=False)
    figure.title(f"{_title(finetunejob)}  (train: line, eval: x)").label("step")
    return figure.build().string(colorless=not color)


def write_png(finetunejob: dict[str, Any], path: Path, size: tuple[int, int] = PNG_SIZE) -> None:
    """The train and eval loss against the step, the best evaluation marked, as a PNG of `size` pixels."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as missing:
        raise RuntimeError(MISSING_EXTRA) from missing
    points = curves.history((finetunejob.get("status") or {}).get("progress"))
    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps, losses = series(points, "loss")
    axes.plot(steps, losses, label="train loss", color="tab:blue", linewidth=1.2)
    steps, losses = series(points, "evalLoss")
    if steps:
        axes.plot(steps, losses, label="eval loss", color="tab:orange", marker="o", markersize=4)
    best = curves.best_evaluation(points)
    if best is not None:
        axes.axvline(best["step"], color="tab:green", linestyle="--", linewidth=1)
        label = f"best eval loss {best['evalLoss']:.4g} (step {best['step']})"
        axes.plot([best["step"]], [best["evalLoss"]], "*", markersize=14, color="tab:green", label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(_title(finetunejob))
    axes.grid(alpha=0.3)
    if points:
        axes.legend()
    figure.text(0.01, 0.01, "  ·  ".join(summary(finetunejob)[1:])[:180], fontsize=8, color="dimgray")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)


def current_namespace(kubeconfig: str | None) -> str:
    """The namespace of the kubeconfig's current context, as kubectl picks it."""
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig (in a pod): kubectl's default
        return "default"


def main(target: str, namespace: str | None, output: str | None, kubeconfig: str | None) -> int:
    from kubetune.kube import Kube

    try:
        name = parse_target(target)
    except ValueError as error:
        print(f"kubetune plot: {error}", file=sys.stderr)
        return 2
    namespace = namespace or current_namespace(kubeconfig)
    finetunejob = Kube.from_environment(kubeconfig).get("FineTuneJob", namespace, name)
    if finetunejob is None:
        print(f"kubetune plot: FineTuneJob {namespace}/{name} not found", file=sys.stderr)
        return 1
    if not curves.history((finetunejob.get("status") or {}).get("progress")):
        print(f"{namespace}/{name} has no loss history yet (it fills once training logs its first step)")
        return 0
    try:
        if output:
            write_png(finetunejob, Path(output))
            print(f"wrote {output}")
        else:
            import shutil

            columns, rows = shutil.get_terminal_size((100, 30))
            print(terminal_chart(finetunejob, min(columns, 140), max(min(rows - 6, 30), 12)))
    except RuntimeError as error:
        print(f"kubetune plot: {error}", file=sys.stderr)
        return 1
    print("\n".join(summary(finetunejob)))
    return 0
