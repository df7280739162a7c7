"""The results: a table on stdout, a JSON file and a PNG plot of every ramp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def capacity_table(results: dict[str, Any]) -> str:
    """Capacity per server and stream, with fanout's ratio to Janus where both ran."""
    rows = ["server  rate   srtp  transport  route     viewers held  Gbit/s  kpkt/s  cpu/Gbit/s  p99 ms  limited by"]
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
            f"{ramp.get('route', 'udp/ipv4'):9s} {held_text:>12s}"
            f"  {gbps:>6s}  {kpps:>6s}  {per:>10s}  {p99:>6s}  {ramp['capacity_limited_by']}"
        )
        route = ramp.get("route", "udp/ipv4")
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
    return "\n".join(rows + ([""] + ratios if ratios else []))


def ratios(results: dict[str, Any]) -> dict[str, float]:
    capacities: dict[str, dict[str, int]] = {}
    for ramp in results["ramps"]:
        if ramp.get("route", "udp/ipv4") == "udp/ipv4":
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
        style = "-" if ramp["server"] == "fanout" else "--"
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
