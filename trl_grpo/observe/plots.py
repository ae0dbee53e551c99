"""Pictures of a run: reward curves from a trainer log history, before/after bars.

    python -m trl_grpo.observe.plots ckpts/RUN/log_history.json    # redraws ckpts/RUN/reward_curves.png

Used by train.py (reward_curves.png) and bench/learning.py (learning.png). matplotlib is
imported inside functions with the file-only Agg backend, so this works on headless machines.
"""

from __future__ import annotations

import json
import os
import sys

from trl_grpo.answers.rewards import REWARD_FUNCS

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


def sft_losses(log_history: list[dict] | None) -> tuple[list[int], list[float]]:
    """``(steps, losses)`` of a cold start's log history (sft_log_history.json)."""
    points = [(e["step"], e["loss"]) for e in log_history or [] if "loss" in e and "step" in e]
    return [s for s, _ in points], [v for _, v in points]


def plot_reward_curves(
    log_history: list[dict], path: str, title: str, ax=None, sft_history: list[dict] | None = None
) -> None:
    """Per-reward means over training steps, beside them the telemetry shares when logged, and before
    them the cold start's loss when ``sft_history`` has one; writes ``path`` unless drawing into ``ax``
    (then the rewards only)."""
    plt = _pyplot()
    own = ax is None
    telemetry = telemetry_series(log_history) if own else {}
    sft_steps, losses = sft_losses(sft_history) if own else ([], [])
    if own:
        panels = 1 + bool(telemetry) + bool(losses)
        fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False)
        if losses:
            left = axes[0][0]
            left.plot(sft_steps, losses, marker=".", markersize=3, color="#7a4ea3")
            left.set(xlabel="cold-start step", ylabel="loss", title="cold start (supervised)")
            left.set_ylim(bottom=0)
            left.grid(alpha=0.3)
        ax = axes[0][int(bool(losses))]
        if telemetry:
            right = axes[0][-1]
            for name, (steps, values) in telemetry.items():
                right.plot(steps, values, marker=".", markersize=3, label=name.replace("_", " "))
            right.set(xlabel="step", ylabel="share of completions", ylim=(-0.02, 1.02), title="telemetry")
            right.grid(alpha=0.3)
            right.legend(fontsize=8)
    for name, (steps, values) in reward_series(log_history).items():
        ax.plot(steps, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.05, max(2.05, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    if reward_series(log_history):
        ax.legend()
    ax.set_title(title)
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def draw_run(run_dir: str, history: list[dict], what: str) -> None:
    """A run folder's reward_curves.png: GRPO's rewards (``history``), and the cold start's loss beside
    them when its sft_log_history.json is there; titled with the folder's name and ``what``."""
    path = os.path.join(run_dir, "sft_log_history.json")
    sft_history = None
    if os.path.isfile(path):
        with open(path) as f:
            sft_history = json.load(f)
    title = f"{os.path.basename(os.path.normpath(run_dir))}: {what}"
    plot_reward_curves(history, os.path.join(run_dir, "reward_curves.png"), title, sft_history=sft_history)


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
    draw_run(os.path.dirname(os.path.abspath(history_path)), history, "rewards")
    out = os.path.join(os.path.dirname(history_path), "reward_curves.png")
    print(out)


LEVEL_BARS = (  # (report key, label, colour): what each configuration's bar shows, left to right
    ("base", "untrained", "#8aa4c8"),
    ("sft_only", "cold start alone", "#c9a0dc"),
    ("grpo_only", "GRPO alone", "#7fb77e"),
    ("levels", "cold start + GRPO", "#2d6a2d"),
)


def _bar_sets(report: dict) -> list[tuple[str, str, dict]]:
    """``(label, colour, {level: summary})`` for each bar of the recipe's panel present in ``report``."""
    sets = []
    for key, label, colour in LEVEL_BARS:
        if key == "base":
            sets.append((label, colour, {lv: r["base"] for lv, r in report["levels"].items()}))
        elif key == "levels":
            name = label if "sft_only" in report else "trained"
            sets.append((name, colour, {lv: r["trained"] for lv, r in report["levels"].items()}))
        elif key in report:
            sets.append((label, colour, {lv: r["trained"] for lv, r in report[key]["levels"].items()}))
    return sets


def plot_levels(report: dict, path: str) -> None:
    """Per-level held-out accuracy with 95% intervals: the untrained model, the cold start alone, GRPO
    alone and the cold start then GRPO (those the report has); the original configuration's panel
    beside it when the report has one."""
    plt = _pyplot()
    panels = [("recipe", report, _bar_sets(report))]
    if "original_config" in report:
        original = report["original_config"]
        panels.append(
            (
                "original configuration",
                original,
                [
                    ("untrained", LEVEL_BARS[0][2], {lv: r["base"] for lv, r in original["levels"].items()}),
                    ("trained", LEVEL_BARS[-1][2], {lv: r["trained"] for lv, r in original["levels"].items()}),
                ],
            )
        )
    widths = [len(sets) for _, _, sets in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.4 * sum(widths) + 2, 4.2), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    for ax, (name, result, sets) in zip(axes[0], panels, strict=True):
        levels, width = list(result["levels"]), 0.8 / len(sets)
        for i, (label, colour, by_level) in enumerate(sets):
            acc = [by_level[lv]["accuracy"] for lv in levels]
            lo = [a - by_level[lv]["accuracy_ci95"][0] for a, lv in zip(acc, levels, strict=True)]
            hi = [by_level[lv]["accuracy_ci95"][1] - a for a, lv in zip(acc, levels, strict=True)]
            xs = [j - 0.4 + width * (i + 0.5) for j in range(len(levels))]
            ax.bar(xs, acc, width=width, color=colour, label=label, yerr=[lo, hi], capsize=2)
            for x, a, up in zip(xs, acc, hi, strict=True):  # above the interval, so a bar of 0 stays readable
                ax.text(x, a + up + 0.015, f"{a:.2f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(levels)), [f"level {lv}" for lv in levels])
        sft = f"{result['sft_steps']} SFT + " if result.get("sft_steps") else ""
        ax.set(ylim=(0, 1.08), ylabel="held-out accuracy (greedy)", title=f"{name}: {sft}{result['steps']} GRPO steps")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
