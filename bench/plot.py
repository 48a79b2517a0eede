"""Renders bench/results/<name>.png from <name>.json (written by bench/peers.mjs).

    bench/.venv/bin/python bench/plot.py bench/results/peers.json bench/results/peers.png

Every plotted figure is a difference or a ratio against the direct-to-mock
baseline measured in the same run.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
r = json.load(open(src))
gws = {k: v for k, v in r["gateways"].items() if "error" not in v}
colors = {"tollgate": "#d35400", "tollgate-workerd": "#8e44ad", "workerd-floor": "#7f7f7f", "portkey": "#2c7fb8", "litellm": "#41ab5d"}
# Lighter shades for each tollgate runtime's profiles.
profile_colors = {"tollgate": "#f0a868", "tollgate-workerd": "#c39bd3"}


def display(n):
    """The gateway's name in the outputs ("tollgate (bare workerd)"), on two lines."""
    return gws[n].get("display_name", n).replace(" (", "\n(")


fig, ax = plt.subplots(2, 2, figsize=(12, 8.5))
title = f"Gateways vs direct-to-mock, same run · {r['date'][:10]} · {r['machine']['cpu']} × {r['machine']['cores']}"
if r.get("label"):
    title += f" · {r['label']}"
fig.suptitle(title, fontsize=11)

# (a) added latency at c=1: median and p99.
a = ax[0][0]
names = list(gws)
labels, med, p99, cols = [], [], [], []
for n in names:
    labels.append(display(n))
    med.append(gws[n]["c1"]["added_median_ms"])
    p99.append(gws[n]["c1"]["added_p99_ms"])
    cols.append(colors.get(n, "grey"))
for arm, short in [("tollgate", "wrangler"), ("tollgate-workerd", "workerd")]:
    t = gws.get(arm, {}).get("profiles") or {}
    for key, label in [("exact_cache_hit", "cache hit"), ("budget_check", "budget on"), ("semantic_cache_hit", "semantic hit")]:
        m = t.get(key)
        if m and "added_median_ms" in m:
            labels.append(f"{label}\n({short})")
            med.append(m["added_median_ms"])
            p99.append(m["added_p99_ms"])
            cols.append(profile_colors[arm])
x = range(len(labels))
a.bar([i - 0.2 for i in x], med, 0.4, color=cols, label="median (paired per round)")
a.bar([i + 0.2 for i in x], p99, 0.4, color=cols, alpha=0.45, label="p99 (pooled)")
a.set_xticks(list(x), [lb.replace("\n", " ") for lb in labels], fontsize=7, rotation=30, ha="right")
a.set_yscale("symlog", linthresh=1)
a.set_ylabel("added latency vs direct (ms)")
a.set_title("Added latency, concurrency 1", fontsize=10)
a.legend(fontsize=8)

# (b) throughput as % of direct.
b = ax[0][1]
for n in names:
    sw = gws[n]["sweep"]
    b.plot([p["c"] for p in sw], [100 * p["rps_ratio"] for p in sw], "o-", color=colors.get(n, "grey"), label=gws[n].get("display_name", n))
b.set_xscale("log", base=2)
b.set_xticks([p["c"] for p in gws[names[0]]["sweep"]], [str(p["c"]) for p in gws[names[0]]["sweep"]])
b.set_ylim(bottom=0)
b.set_xlabel("concurrency (closed loop)")
b.set_ylabel("req/s, % of direct-to-mock")
b.set_title("Throughput (gateway on one core)", fontsize=10)
b.legend(fontsize=8)

# (c) added p99 per concurrency.
c = ax[1][0]
for n in names:
    sw = gws[n]["sweep"]
    c.plot([p["c"] for p in sw], [max(p["added_p99_ms"], 0.01) for p in sw], "o-", color=colors.get(n, "grey"), label=gws[n].get("display_name", n))
c.set_xscale("log", base=2)
c.set_xticks([p["c"] for p in gws[names[0]]["sweep"]], [str(p["c"]) for p in gws[names[0]]["sweep"]])
c.set_yscale("log")
c.set_xlabel("concurrency (closed loop)")
c.set_ylabel("added p99 vs direct (ms)")
c.set_title("Tail latency under load", fontsize=10)
c.legend(fontsize=8)

# (d) streams: added TTFT and inter-chunk p99.
d = ax[1][1]
sl, ttft, gap, sc = [], [], [], []
for n in names:
    s = gws[n]["streams"]
    if s["gateway"]["ok"] == 0:
        continue
    sl.append(display(n))
    ttft.append(s["added_ttft_median_ms"])
    gap.append(s["added_gap_p99_ms"])
    sc.append(colors.get(n, "grey"))
xs = range(len(sl))
d.bar([i - 0.2 for i in xs], ttft, 0.4, color=sc, label="added TTFT, median")
d.bar([i + 0.2 for i in xs], gap, 0.4, color=sc, alpha=0.45, label="added inter-chunk gap, p99")
d.set_xticks(list(xs), sl, fontsize=8)
d.set_yscale("symlog", linthresh=1)
d.set_ylabel("ms vs direct")
failed = [gws[n].get("display_name", n) for n in names if gws[n]["streams"]["gateway"]["ok"] == 0]
d.set_title("Streams (SSE, fixed inter-chunk delay)" + (f"; failed: {', '.join(failed)}" if failed else ""), fontsize=10)
d.legend(fontsize=8)

fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"plot: wrote {out}")
