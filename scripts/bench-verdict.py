#!/usr/bin/env python3
"""Issue 7's targets, each met or MISSED, from the medians of a scripts/bench.sh run.

Input: a file of "row<TAB>column<TAB>value" lines, the cells of the bench's table (columns t1 ..
t8 as in the table, plus "cpu" for the engine CPU seconds per GB and "rss" for "now/peak" MiB).
An aim is a goal the issue names besides the target; it is reported, not required.
"""
import sys

res = {}
for line in open(sys.argv[1]):
    row, col, val = line.rstrip("\n").split("\t")
    res[row, col] = val


def num(row, col, part=0):
    v = res.get((row, col), "-")
    if v in ("-", ""):
        return None
    v = v.split()[0].rstrip("%")
    return float(v.split("/")[part].rstrip("%"))


out = []


def verdict(ok):
    return "met" if ok else "MISSED"


def ratio_line(label, col, peers, need, aim=None, w="warren"):
    x = num(w, col)
    if x is None:
        out.append("- %s: UNDECIDED (no warren figure)" % label)
        return
    parts, ok, missing = [], True, []
    for p in peers:
        y = num(p, col)
        if y:
            parts.append("%.2fx %s" % (x / y, p))
            ok &= x / y >= need[p]
        else:
            missing.append(p)
    if missing:
        text = "- %s: %s: UNDECIDED (no figure for %s)" % (label, ", ".join(parts), ", ".join(missing))
    else:
        text = "- %s: %s: %s" % (label, ", ".join(parts), verdict(ok))
    if aim is not None and num("veth", col):
        r = x / num("veth", col)
        text += "; aim >= %.1fx veth (%.2fx): %s" % (aim, r, verdict(r >= aim))
    out.append(text)


peers_all = ["slirp4netns-65520", "slirp4netns-1500", "pasta", "rootlesskit-builtin"]
ratio_line("T1 out >= 2x slirp4netns, >= 1x pasta", "t1", ["slirp4netns-65520", "pasta"], {"slirp4netns-65520": 2, "pasta": 1}, 0.7)
ratio_line("T1 -R >= 2x slirp4netns, >= 1x pasta", "t1r", ["slirp4netns-65520", "pasta"], {"slirp4netns-65520": 2, "pasta": 1}, 0.7)
for col, label in (("t1", "T1 out at MTU 1500 >= 3x slirp4netns at 1500"), ("t1r", "T1 -R at MTU 1500 >= 3x slirp4netns at 1500")):
    ratio_line(label, col, ["slirp4netns-1500"], {"slirp4netns-1500": 3}, None, "warren-1500")
for col, label in (("t2", "T2 loopback client >= 1x pasta and RootlessKit"), ("t2r", "T2 -R >= 1x pasta and RootlessKit")):
    ratio_line(label, col, ["pasta", "rootlesskit-builtin"], {"pasta": 1, "rootlesskit-builtin": 1}, 0.9)
ratio_line("T2 source kept >= 2x slirp4netns", "t2s", ["slirp4netns-65520"], {"slirp4netns-65520": 2})

for col, label in (("t3", "T3 out p50/p99 <= every peer"), ("t3f", "T3 via a published port p50/p99 <= every peer")):
    w = res.get(("warren", col), "-")
    if w == "-":
        out.append("- %s: UNDECIDED (no warren figure)" % label)
        continue
    # RootlessKit's builtin driver only forwards ports: it has no egress figures.
    peers = peers_all if col == "t3f" else peers_all[:3]
    missing = [p for p in peers if res.get((p, col), "-") == "-"]
    if missing:
        out.append("- %s: %s: UNDECIDED (no figure for %s)" % (label, w, ", ".join(missing)))
        continue
    ok, worse = True, []
    for p in peers:
        for i, name in ((0, "p50"), (1, "p99")):
            if num("warren", col, i) > num(p, col, i):
                ok = False
                worse.append("%s %s %s" % (p, name, res[p, col]))
    text = "- %s: %s%s: %s" % (label, w, " (above: %s)" % ", ".join(worse) if worse else "", verdict(ok))
    if res.get(("veth", col), "-") != "-":
        r50, r99 = (num("warren", col, i) / num("veth", col, i) for i in (0, 1))
        text += "; aim <= 1.5x veth (%.2fx, %.2fx): %s" % (r50, r99, verdict(r50 <= 1.5 and r99 <= 1.5))
    out.append(text)

for col, label in (("t4", "T4 out >= 1.5x the best peer"), ("t4f", "T4 via a published port >= 1.5x the best peer")):
    x = num("warren", col)
    peers = [(y, p) for y, p in ((num(p, col), p) for p in peers_all) if y]
    if x is None or not peers:
        out.append("- %s: UNDECIDED (no figures)" % label)
        continue
    best, name = max(peers)
    text = "- %s: %.2fx %s: %s" % (label, x / best, name, verdict(x / best >= 1.5))
    if num("veth", col):
        r = x / num("veth", col)
        text += "; aim >= 0.8x veth (%.2fx): %s" % (r, verdict(r >= 0.8))
    out.append(text)

for col, label in (("t5", "T5 UDP out: rate >= the best peer's, loss <= its loss"), ("t5r", "T5 -R: rate >= the best peer's, loss <= its loss")):
    if res.get(("warren", col), "-") == "-":
        out.append("- %s: UNDECIDED (no warren figure)" % label)
        continue
    peers = [(num(p, col), p) for p in peers_all if res.get((p, col), "-") != "-"]
    if not peers:
        out.append("- %s: UNDECIDED (no peer figures)" % label)
        continue
    rate, name = max(peers)
    wr, wl, pl = num("warren", col), num("warren", col, 1), num(name, col, 1)
    out.append("- %s: %s against %s %s: %s" % (label, res["warren", col], name, res[name, col], verdict(wr >= rate and wl <= pl)))


def single(label, figures, text, ok):
    """A target from figures of the table; UNDECIDED when one is missing."""
    if any(f is None for f in figures):
        out.append("- %s: UNDECIDED (no figures)" % label)
    else:
        out.append("- %s: %s: %s" % (label, text(), verdict(ok())))


x, k = num("warren-bridge", "t6"), num("kernel-bridge", "t6")
single("T6 >= 0.5x kernel bridge", [x, k], lambda: "%.2fx" % (x / k), lambda: x / k >= 0.5)
x7, x1 = num("warren", "t7"), num("warren", "t1")
single("T7 4 flows > 1 flow", [x7, x1], lambda: "%.2f against %.2f Gb/s" % (x7, x1), lambda: x7 > x1)
x8 = num("warren", "t8")
single("T8 <= 64 KiB per idle connection", [x8], lambda: "%.1f" % x8, lambda: x8 <= 64)
rss = num("warren", "rss")
single("RSS <= 20 MiB (after the bulk tests)", [rss], lambda: "%.0f MiB" % rss, lambda: rss <= 20)
wc, pc = num("warren", "cpu"), num("pasta", "cpu")
single("CPU s/GB (T1 out) <= pasta's", [wc, pc], lambda: "%.2f against %.2f" % (wc, pc), lambda: wc <= pc)
print("\n".join(out))
