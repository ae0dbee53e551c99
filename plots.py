"""Pictures of a run: reward curves from a trainer log history, before/after bars.

    python plots.py ckpts/RUN/log_history.json    # redraws ckpts/RUN/reward_curves.png

Used by train.py (reward_curves.png) and bench/learning.py (learning.png). matplotlib is
imported inside functions with the file-only Agg backend, so this works on headless machines.
"""

from __future__ import annotations

import json
import os
import sys

from reward import REWARD_FUNCS

# TRL logs each reward as rewards/<function name>/mean, and their weighted sum as "reward".
CURVES = {name: f"rewards/{func.__name__}/mean" for name, func in REWARD_FUNCS.items()}
CURVES["total"] = "reward"


def reward_series(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """``{curve name: (steps, values)}`` for every reward curve present in the log history."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for name, key in CURVES.items():
        points = [(e["step"], e[key]) for e in log_history if key in e and "step" in e]
        if points:
            series[name] = ([s for s, _ in points], [v for _, v in points])
    return series


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def telemetry_series(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """``{name: (steps, values)}`` of the logged ``telemetry/<name>`` shares (mean length left out)."""
    names = sorted({k for e in log_history for k in e if k.startswith("telemetry/") and k != "telemetry/mean_length"})
    out = {}
    for key in names:
        points = [(e["step"], e[key]) for e in log_history if e.get(key) is not None and "step" in e]
        if points:
            out[key.split("/", 1)[1]] = ([s for s, _ in points], [v for _, v in points])
    return out


def plot_reward_curves(log_history: list[dict], path: str, title: str, ax=None) -> None:
    """Per-reward means over training steps, and beside them the telemetry shares when logged;
    writes ``path`` unless drawing into ``ax`` (then the rewards only)."""
    plt = _pyplot()
    own = ax is None
    telemetry = telemetry_series(log_history) if own else {}
    if own:
        fig, axes = plt.subplots(1, 2 if telemetry else 1, figsize=(13 if telemetry else 7, 4), squeeze=False)
        ax = axes[0][0]
        if telemetry:
            right = axes[0][1]
            for name, (steps, values) in telemetry.items():
                right.plot(steps, values, marker=".", markersize=3, label=name.replace("_", " "))
            right.set(xlabel="step", ylabel="share of completions", ylim=(-0.02, 1.02), title="telemetry")
            right.grid(alpha=0.3)
            right.legend(fontsize=8)
    for name, (steps, values) in reward_series(log_history).items():
        ax.plot(steps, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.05, max(2.05, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def plot_learning(log_history: list[dict], base: dict, trained: dict, path: str, title: str) -> None:
    """Reward curves on the left; held-out before/after bars with 95% intervals on the right."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_reward_curves(log_history, path, "training rewards", ax=left)
    labels = ["format reward", "accuracy"]
    for offset, (name, summary) in zip((-0.2, 0.2), (("base", base), ("trained", trained)), strict=True):
        values = [summary["format_reward_mean"], summary["accuracy"]]
        lo, hi = summary["accuracy_ci95"]
        err = [[0, summary["accuracy"] - lo], [0, hi - summary["accuracy"]]]
        bars = right.bar([i + offset for i in range(2)], values, width=0.4, yerr=err, capsize=4, label=name)
        right.bar_label(bars, fmt="%.2f")
    right.set_xticks(range(2), labels)
    right.set_ylim(0, 1.1)
    right.set_title(f"held-out, n={base['n']}")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    history_path = sys.argv[1]
    with open(history_path) as f:
        history = json.load(f)
    out = os.path.join(os.path.dirname(history_path), "reward_curves.png")
    plot_reward_curves(history, out, os.path.basename(os.path.dirname(os.path.abspath(history_path))))
    print(out)


def plot_levels(report: dict, path: str) -> None:
    """Per-level held-out accuracy before/after training with 95% intervals; the original
    configuration's beside the recipe's when the report has it."""
    plt = _pyplot()
    configs = [("recipe", report)] + (
        [("original configuration", report["original_config"])] if "original_config" in report else []
    )
    fig, axes = plt.subplots(1, len(configs), figsize=(6.5 * len(configs), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], configs, strict=True):
        levels = list(result["levels"])
        for offset, which, color in ((-0.2, "base", "#8aa4c8"), (0.2, "trained", "#2d6a2d")):
            acc = [result["levels"][lv][which]["accuracy"] for lv in levels]
            lo = [a - result["levels"][lv][which]["accuracy_ci95"][0] for a, lv in zip(acc, levels, strict=True)]
            hi = [result["levels"][lv][which]["accuracy_ci95"][1] - a for a, lv in zip(acc, levels, strict=True)]
            xs = [i + offset for i in range(len(levels))]
            ax.bar(xs, acc, width=0.4, color=color, label=which, yerr=[lo, hi], capsize=3)
            for x, a, up in zip(xs, acc, hi, strict=True):  # above the interval, so a bar of 0 stays readable
                ax.text(x, a + up + 0.015, f"{a:.2f}", ha="center", fontsize=8)
        ax.set_xticks(range(len(levels)), [f"level {lv}" for lv in levels])
        ax.set(ylim=(0, 1.05), ylabel="held-out accuracy (greedy)", title=f"{name}: {result['steps']} steps")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
