"""The results: a table on stdout, a JSON file and a PNG plot of every ramp."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def capacity_table(results: dict[str, Any]) -> str:
    """Capacity per server and stream, with fanout's ratio to Janus where both ran."""
    rows = [
        "server  rate   srtp  transport  route     feedback  viewers held  Gbit/s  kpkt/s  cpu/Gbit/s  p99 ms  limited by"
    ]
    capacities: dict[tuple[str, str], dict[str, int]] = {}
    routed: list[tuple[str, str, str, int]] = []
    for ramp in results["ramps"]:
        held = [s for s in ramp["steps"] if s["held"]]
        best = held[-1] if held else None
        gbps = f"{best['delivered_gbps']:.2f}" if best else "-"
        kpps = f"{best['delivered_pps'] / 1e3:.1f}" if best else "-"
        per = f"{best['cpu_per_gbps']:.3f}" if best and best["cpu_per_gbps"] else "-"
        p99 = f"{best['latency_ms']['p99']:.1f}" if best and best["latency_ms"].get("p99") is not None else "-"
        held_text = f"{ramp['capacity']}" + ("+" if ramp["capacity_limited_by"] == "max_viewers" else "")
        rows.append(
            f"{ramp['server']:7s} {ramp['rate']:6s} {ramp['srtp']:5s} {ramp['transport']:10s} "
            f"{ramp.get('route', 'udp/ipv4'):9s} {ramp.get('feedback', 'off'):8s}  {held_text:>12s}"
            f"  {gbps:>6s}  {kpps:>6s}  {per:>10s}  {p99:>6s}  {ramp['capacity_limited_by']}"
        )
        route = ramp.get("route", "udp/ipv4")
        if ramp.get("feedback", "off") != "off":
            continue
        if route == "udp/ipv4":
            capacities.setdefault((ramp["rate"], ramp["srtp"]), {})[ramp["server"]] = ramp["capacity"]
        else:
            routed.append((ramp["rate"], ramp["srtp"], route, ramp["capacity"]))
    ratios = []
    for rate, srtp, route, capacity in routed:
        udp = capacities.get((rate, srtp), {}).get("fanout")
        if udp:
            ratios.append(f"{rate} {srtp}: fanout over {route} holds {capacity / udp:.2f}x its UDP/IPv4 viewers")
    for (rate, srtp), by_server in capacities.items():
        if "fanout" in by_server and by_server.get("janus"):
            ratio = by_server["fanout"] / by_server["janus"]
            ratios.append(f"{rate} {srtp}: fanout holds {ratio:.1f}x Janus's viewers")
    for comparison in results.get("feedback", []):
        ratios.append(
            f"{comparison['server']} {comparison['rate']} {comparison['srtp']} {comparison['route']}: with feedback "
            f"{_ratio(comparison['capacity_ratio'])} of the viewers, {_ratio(comparison['throughput_ratio_at_capacity'])} "
            f"of the Gbit/s held, CPU per Gbit {_ratio(comparison['cpu_per_gbps_ratio'])} of without "
            f"(the steps both held)"
        )
    return "\n".join(rows + ([""] + ratios if ratios else []))


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _key(ramp: dict[str, Any]) -> tuple[str, str, str, str]:
    return ramp["server"], ramp["rate"], ramp["srtp"], ramp.get("route", "udp/ipv4")


def feedback_comparison(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ramp with feedback against the ramp without of the same server, rate, SRTP profile
    and route, in the same run: step by step (the same targets), throughput and CPU per Gbit
    with over without; and the viewers and Gbit/s each held."""
    without = {_key(ramp): ramp for ramp in results["ramps"] if ramp.get("feedback", "off") == "off"}
    comparisons = []
    for ramp in results["ramps"]:
        off = without.get(_key(ramp))
        if ramp.get("feedback", "off") == "off" or off is None:
            continue
        steps: list[dict[str, Any]] = []
        for before, after in zip(off["steps"], ramp["steps"], strict=False):
            steps.append(
                {
                    "viewers": [before["viewers"], after["viewers"]],
                    "delivered_gbps": [before["delivered_gbps"], after["delivered_gbps"]],
                    "server_cpu": [before["server_cpu"], after["server_cpu"]],
                    "cpu_per_gbps": [before["cpu_per_gbps"], after["cpu_per_gbps"]],
                    "load_core_busy": [before.get("load_core_busy"), after.get("load_core_busy")],
                    "held": [before["held"], after["held"]],
                    "throughput_ratio": after["delivered_gbps"] / before["delivered_gbps"] if before["delivered_gbps"] else None,
                    "cpu_per_gbps_ratio": (
                        after["cpu_per_gbps"] / before["cpu_per_gbps"]
                        if before["cpu_per_gbps"] and after["cpu_per_gbps"]
                        else None
                    ),
                }
            )
        both: list[float] = [step["cpu_per_gbps_ratio"] for step in steps if all(step["held"]) and step["cpu_per_gbps_ratio"]]
        held_off = [s for s in off["steps"] if s["held"]]
        held_on = [s for s in ramp["steps"] if s["held"]]
        comparisons.append(
            {
                "server": ramp["server"],
                "rate": ramp["rate"],
                "srtp": ramp["srtp"],
                "route": ramp.get("route", "udp/ipv4"),
                "feedback": ramp["feedback"],
                "capacity": [off["capacity"], ramp["capacity"]],
                "capacity_ratio": ramp["capacity"] / off["capacity"] if off["capacity"] else None,
                "throughput_ratio_at_capacity": (
                    held_on[-1]["delivered_gbps"] / held_off[-1]["delivered_gbps"] if held_on and held_off else None
                ),
                # The geometric mean over the steps both held: above 1, feedback costs CPU per Gbit.
                "cpu_per_gbps_ratio": statistics.geometric_mean(both) if both else None,
                "steps": steps,
            }
        )
    return comparisons


def ratios(results: dict[str, Any]) -> dict[str, float]:
    capacities: dict[str, dict[str, int]] = {}
    for ramp in results["ramps"]:
        if ramp.get("route", "udp/ipv4") == "udp/ipv4" and ramp.get("feedback", "off") == "off":
            capacities.setdefault(f"{ramp['rate']} {ramp['srtp']}", {})[ramp["server"]] = ramp["capacity"]
    return {
        key: by_server["fanout"] / by_server["janus"]
        for key, by_server in capacities.items()
        if "fanout" in by_server and by_server.get("janus")
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """Six panels against viewers: Gbit/s, packets/s, CPU, CPU per Gbit/s, loss, latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    panels = axes.flatten()
    titles = [
        "delivered Gbit/s (SRTP)",
        "delivered packets/s (thousands)",
        "server process CPU (cores; softirq done in its context included)",
        "CPU seconds per Gbit delivered",
        "RTP loss % (all viewers)",
        "latency p50 / p99 ms (sample viewers)",
    ]
    for ramp in results["ramps"]:
        steps = ramp["steps"]
        if not steps:
            continue
        label = f"{ramp['server']} {ramp['rate']} {ramp['srtp']} {ramp.get('route', 'udp/ipv4')}"
        if ramp.get("feedback", "off") != "off":
            label += f" feedback {ramp['feedback']}"
        style = "--" if ramp["server"] != "fanout" else "-." if ramp.get("feedback", "off") != "off" else "-"
        x = [s["viewers"] for s in steps]
        (line,) = panels[0].plot(
            x,
            [s["delivered_gbps"] for s in steps],
            style,
            marker="o",
            markersize=3,
            label=label,
        )
        color = line.get_color()
        panels[1].plot(
            x,
            [s["delivered_pps"] / 1e3 for s in steps],
            style,
            marker="o",
            markersize=3,
            color=color,
        )
        panels[2].plot(
            x,
            [s["server_cpu"] for s in steps],
            style,
            marker="o",
            markersize=3,
            color=color,
        )
        panels[3].plot(
            x,
            [s["cpu_per_gbps"] or float("nan") for s in steps],
            style,
            marker="o",
            markersize=3,
            color=color,
        )
        panels[4].plot(
            x,
            [100 * s["loss"] for s in steps],
            style,
            marker="o",
            markersize=3,
            color=color,
        )
        panels[5].plot(
            x,
            [s["latency_ms"].get("p50") or float("nan") for s in steps],
            style,
            marker=".",
            color=color,
        )
        panels[5].plot(
            x,
            [s["latency_ms"].get("p99") or float("nan") for s in steps],
            style,
            marker="^",
            markersize=3,
            color=color,
            alpha=0.6,
        )
        if ramp["capacity"]:
            for panel in (panels[0], panels[4]):
                panel.axvline(ramp["capacity"], color=color, linestyle=":", alpha=0.7)
    threshold = results.get("plan", {}).get("loss_threshold")
    if threshold is not None:
        panels[4].axhline(100 * threshold, color="black", linewidth=0.8)
    panels[4].set_yscale("symlog", linthresh=0.1)
    panels[4].set_ylim(bottom=0)
    panels[5].set_yscale("log")
    for panel, title in zip(panels, titles, strict=True):
        panel.set_title(title, fontsize=10)
        panel.set_xlabel("viewers")
        panel.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    meta = results.get("meta", {})
    figure.suptitle(
        f"fanout bench load — {meta.get('date', '')} — commit {str(meta.get('commit', ''))[:10]} — "
        f"server on 1 core ({meta.get('cpu_model', '')}), dotted: capacity at ≤{100 * (threshold or 0):g}% loss",
        fontsize=11,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
