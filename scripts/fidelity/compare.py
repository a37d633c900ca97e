"""Compares what scripts/fidelity.sh recorded: each peer's runs DIRECT and THROUGH mcp-edge.

usage: python compare.py OUT_DIR
Prints one markdown table per peer (the rows of docs/FIDELITY.md), writes them to
OUT_DIR/report.md with the differences found, exits 1 if any scenario or flow run through
mcp-edge differs from the direct runs.

Conformance scenarios are compared by outcome (pass, or FAIL with its failed checks); a change
of any single check's status is named in the notes. Flows are compared on the client's whole
output after masking what legitimately changes from run to run (MASKS below): a proxied run
is the same when it equals either direct run.
"""
import datetime
import glob
import json
import os
import re
import sys

OUT = sys.argv[1]
TIME_OF_DAY = re.compile(r"\b\d{1,2}:\d\d:\d\d [AP]M\b")
TTL = re.compile(r'"ttlMs": (\d+)')
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What differs from run to run whoever answers, and is masked before comparing.
MASKS = {
    "everything": "the time of day in dynamic resources (`created at 1:19:00 PM`) and UUIDs "
    "(the session id server-everything writes into toggle-subscriber-updates' answer)",
    "python": "the number `reads` returns (how many resource reads reached the upstream: fewer through "
    "a cache, by design; its values are in the notes), and the value of a positive `ttlMs` (a hit "
    "restates what remains of the entry's life, as SEP-2549 wants; zero, presence and `cacheScope` "
    "are compared)",
}


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def hits(values):
    """'h/n': how many of the answers a flow or scenario got carried x-cache HIT (or STALE)."""
    if not values:
        return "-"
    return f"{sum(1 for v in values if v.endswith(('HIT', 'STALE')))}/{len(values)}"


def hit_note(per_config):
    """x-cache HIT counts of run 1 → run 2 per configuration, when the cache answered at all."""
    if not any("HIT" in v or "STALE" in v for runs in per_config.values() for r in runs for v in r):
        return None
    return "x-cache HIT run 1 → run 2: " + "; ".join(
        f"{cfg} {hits(runs[0])} → {hits(runs[1])}" for cfg, runs in per_config.items())


def x_cache_log(path):
    """The conformance client's answers: [(time, "POST method HIT"), ...] (x-cache.mjs)."""
    out = []
    if os.path.exists(path):
        for line in open(path):
            try:
                d = json.loads(line)
                out.append((d["t"], f"{d['http']} {d['method']} {d['xcache']}"))
            except (ValueError, KeyError):
                pass
    return out


# ---- conformance -------------------------------------------------------------------------

SCENARIO_DIR = re.compile(r"^server-(.+)-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z)$")


def conformance_run(dest):
    """{scenario: {"checks": [...], "start": t}} of one run of the suite."""
    out = {}
    for path in glob.glob(os.path.join(dest, "server-*", "checks.json")):
        m = SCENARIO_DIR.match(os.path.basename(os.path.dirname(path)))
        if not m:
            continue
        d, t = m.group(2).split("T")
        hh, mm, ss, ms = t[:-1].split("-")
        start = ts(f"{d}T{hh}:{mm}:{ss}.{ms}Z")
        out[m.group(1)] = {"checks": json.load(open(path)), "start": start}
    starts = sorted(v["start"] for v in out.values())
    for v in out.values():
        later = [s for s in starts if s > v["start"]]
        v["end"] = later[0] if later else v["start"] + 60
    return out


def outcome(checks):
    failed = [c for c in checks if c["status"] == "FAILURE"]
    warned = [c for c in checks if c["status"] == "WARNING"]
    cell = f"FAIL ({', '.join(c['id'] for c in failed)})" if failed else "pass"
    if warned:
        cell += f" ({len(warned)} warn)"
    return cell, bool(failed)


def check_statuses(checks):
    d = {}
    for c in checks:
        d.setdefault(c["id"], set()).add(c["status"])
    return {k: "/".join(sorted(v)) for k, v in d.items()}


# ---- flows -------------------------------------------------------------------------------

def masked(kind, name, value):
    s = json.dumps(value, sort_keys=True)
    if kind == "everything":
        s = UUID.sub("<uuid>", TIME_OF_DAY.sub("<time>", s))
    if kind == "python" and name.startswith("call reads"):
        return "<masked>"
    if kind == "python":
        s = TTL.sub(lambda m: '"ttlMs": ' + ('"<positive>"' if int(m.group(1)) > 0 else "0"), s)
    return json.loads(s)


def http_cell(a):
    return f"{a['status']}" + (f" {a['error']['code']}" if isinstance(a.get("error"), dict) else "")


def flow_cell(value):
    if isinstance(value, dict) and isinstance(value.get("status"), int):  # a raw HTTP answer
        return "HTTP " + http_cell(value)
    if isinstance(value, dict) and "same read on the deleted session" in value:
        return (f"HTTP {http_cell(value['read on the live session'])}, DELETE {value['DELETE']}, "
                f"then {http_cell(value['same read on the deleted session'])}; "
                f"no session: {http_cell(value['same read with no session header'])}")
    if isinstance(value, dict) and "error" in value:
        return f"err {value.get('code') if value.get('code') is not None else value['error']}"
    if isinstance(value, dict) and value.get("isError"):
        return "isError"
    return "ok"


def diffs_of(a, b, path="", out=None):
    """Where two values differ: up to three 'path: a ≠ b' lines."""
    out = [] if out is None else out
    if len(out) >= 3:
        return out
    if type(a) is not type(b):
        out.append(f"{path or '/'}: {json.dumps(a)[:60]} ≠ {json.dumps(b)[:60]}")
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: {'missing' if k not in a else json.dumps(a[k])[:60]} ≠ "
                           f"{'missing' if k not in b else json.dumps(b[k])[:60]}")
            else:
                diffs_of(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list):
        if len(a) != len(b):
            out.append(f"{path or '/'}: {len(a)} items ≠ {len(b)} items")
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                diffs_of(x, y, f"{path}/{i}", out)
    elif a != b:
        out.append(f"{path or '/'}: {json.dumps(a)[:60]} ≠ {json.dumps(b)[:60]}")
    return out[:3]


def first_diff(a, b):
    return "; ".join(diffs_of(a, b))


def load_flows(dest):
    try:
        d = json.load(open(dest + ".json"))
        return d["flows"], d.get("x-cache", {})
    except (OSError, ValueError, KeyError):
        err = open(dest + ".err").read()[-400:] if os.path.exists(dest + ".err") else ""
        return {"(client)": {"error": "client crashed", "code": None, "message": err}}, {}


# ---- one peer ----------------------------------------------------------------------------

def via(cells):
    """One cell for every configuration's value, or each named when they differ."""
    if len(set(cells.values())) == 1:
        return next(iter(cells.values()))
    return "; ".join(f"{cfg}: {v}" for cfg, v in cells.items())


def peer(pid):
    meta = json.load(open(os.path.join(OUT, pid, "meta.json")))
    kind, configs = meta["kind"], meta["configs"]
    base = os.path.join(OUT, pid)
    rows, diffs, unstable = [], [], []
    if kind == "conformance":
        runs = {("direct", r): conformance_run(os.path.join(base, "direct", f"run{r}")) for r in (1, 2)}
        xcache = {}
        for cfg in configs:
            for r in (1, 2):
                runs[(cfg, r)] = conformance_run(os.path.join(base, cfg, f"run{r}"))
                xcache[(cfg, r)] = x_cache_log(os.path.join(base, cfg, f"run{r}.x-cache.jsonl"))
        names = sorted(set().union(*[set(v) for v in runs.values()]),
                       key=lambda n: runs[("direct", 1)].get(n, {}).get("start", 9e12))
        for name in names:
            cells, failed, statuses = {}, {}, {}
            for key, run in runs.items():
                sc = run.get(name)
                if sc is None:
                    cells[key], failed[key], statuses[key] = "missing", None, {}
                else:
                    cells[key], failed[key] = outcome(sc["checks"])
                    statuses[key] = check_statuses(sc["checks"])
            notes = []
            if failed[("direct", 1)] != failed[("direct", 2)]:
                unstable.append(name)
                notes.append("direct runs disagree")
            where = []
            for cfg in configs:
                for r in (1, 2):
                    k = (cfg, r)
                    if failed[k] not in (failed[("direct", 1)], failed[("direct", 2)]):
                        where.append(f"{cfg} run {r}: {cells[k]}")
                        cells[k] += " ≠"
            if where:
                diffs.append(f"{name}: direct {cells[('direct', 1)]}, proxied: {'; '.join(where)}")
            for cfg in configs:
                for r in (1, 2):
                    k = (cfg, r)
                    changed = {c: s for c, s in statuses[k].items()
                               if s not in (statuses[("direct", 1)].get(c), statuses[("direct", 2)].get(c))}
                    for c, s in changed.items():
                        notes.append(f"{cfg} run {r}: check `{c}` {statuses[('direct', 1)].get(c, 'absent')} → {s}")
            per_config = {}
            for cfg in configs:
                per_config[cfg] = []
                for r in (1, 2):
                    sc = runs[(cfg, r)].get(name)
                    seen = xcache[(cfg, r)]
                    per_config[cfg].append([v for t, v in seen if sc and sc["start"] <= t < sc["end"]])
            note = hit_note(per_config)
            if note:
                notes.append(note)
            rows.append([name, cells[("direct", 1)], cells[("direct", 2)],
                         via({c: cells[(c, 1)] for c in configs}), via({c: cells[(c, 2)] for c in configs}),
                         "; ".join(notes)])
    else:
        runs, xcache = {}, {}
        for key in [("direct", 1), ("direct", 2)] + [(c, r) for c in configs for r in (1, 2)]:
            folder = "direct" if key[0] == "direct" else key[0]
            runs[key], xcache[key] = load_flows(os.path.join(base, folder, f"run{key[1]}"))
        names = list(dict.fromkeys(list(runs[("direct", 1)]) + [n for v in runs.values() for n in v]))
        for name in names:
            val = {k: masked(kind, name, v.get(name, {"error": "missing", "code": None})) for k, v in runs.items()}
            cells = {k: flow_cell(v.get(name, {"error": "missing", "code": None})) for k, v in runs.items()}
            notes = []
            if val[("direct", 1)] != val[("direct", 2)]:
                unstable.append(name)
                notes.append("direct runs differ: " + (first_diff(val[("direct", 1)], val[("direct", 2)]) or ""))
            found = {}  # the difference -> where it was seen
            for cfg in configs:
                for r in (1, 2):
                    k = (cfg, r)
                    if val[k] not in (val[("direct", 1)], val[("direct", 2)]):
                        found.setdefault(first_diff(val[("direct", 1)], val[k]), []).append(f"{cfg} run {r}")
                        cells[k] += " ≠"
            for d, where in found.items():
                diffs.append(f"{name}: {', '.join(where)}: direct → proxied: {d}")
                notes.append(f"{', '.join(where)}: `{d}`")
            if kind == "python" and name.startswith("call reads"):
                seen = {k: (v.get(name) or {}).get("structured", {}).get("result") for k, v in runs.items()}
                notes.append("reads reaching the upstream: " + ", ".join(
                    f"{'direct' if k[0] == 'direct' else k[0]} run {k[1]}: {n}" for k, n in seen.items()))
            note = hit_note({cfg: [xcache[(cfg, r)].get(name, []) for r in (1, 2)] for cfg in configs})
            if note:
                notes.append(note)
            rows.append([name, cells[("direct", 1)], cells[("direct", 2)],
                         via({c: cells[(c, 1)] for c in configs}), via({c: cells[(c, 2)] for c in configs}),
                         "; ".join(notes)])
    stats = {}
    for cfg in configs:
        for path in sorted(glob.glob(os.path.join(base, cfg, "node*.stats.json"))):
            try:
                totals = json.load(open(path))["routes"][0]["totals"]
            except (OSError, ValueError, KeyError, IndexError):
                continue
            stats[f"{cfg} {os.path.basename(path).split('.')[0]}"] = totals
    return meta, rows, diffs, unstable, stats


def table(rows):
    out = ["| scenario / flow | direct run 1 | direct run 2 | via mcp-edge run 1 | via mcp-edge run 2 | notes |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |")
    return out


def main():
    report, all_diffs = [], []
    for pid in open(os.path.join(OUT, "peers.txt")).read().split():
        meta, rows, diffs, unstable, stats = peer(pid)
        report.append(f"### {meta['title']}")
        report.append("")
        report.append(f"Configurations: {', '.join(meta['configs'])}. "
                      f"{len(rows)} rows; {len(diffs)} differ between direct and proxied.")
        if meta["kind"] in MASKS:
            report.append(f"Masked before comparing: {MASKS[meta['kind']]}.")
        report.append("")
        report.extend(table(rows))
        report.append("")
        if stats:
            report.append("mcp-edge `/stats` totals: " + "; ".join(
                f"{k}: {v.get('requests')} requests, {v.get('hits')} hits {v.get('hits_by_tier')}, "
                f"{v.get('misses')} misses, prefetch {v.get('prefetch')}" for k, v in stats.items()))
            report.append("")
        if unstable:
            report.append("Direct runs disagreeing with each other (not counted as differences): " + ", ".join(unstable))
            report.append("")
        all_diffs += [f"{pid}: {d}" for d in diffs]
    report.append(f"**{len(all_diffs)} scenarios or flows differ between direct and proxied runs.**")
    report += [f"- {d}" for d in all_diffs]
    text = "\n".join(report) + "\n"
    open(os.path.join(OUT, "report.md"), "w").write(text)
    print(text)
    sys.exit(1 if all_diffs else 0)


main()
