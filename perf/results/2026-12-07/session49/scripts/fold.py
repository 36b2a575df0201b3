import sys, collections, re
# usage: perf script -i X | fold.py COMM ANCHOR [depth]
comm, anchor = sys.argv[1], sys.argv[2]
depth = int(sys.argv[3]) if len(sys.argv) > 3 else 1
tot = 0; hit = 0
below = collections.Counter(); leaf = collections.Counter()
cur = None; frames = []
def flush():
    global tot, hit
    if cur is None: return
    if cur != comm: return
    tot += 1
    syms = [f for f in frames]
    # frames listed leaf first
    for i, s in enumerate(syms):
        if anchor in s:
            hit += 1
            if i >= depth:
                below[' <- '.join(reversed(syms[i-depth:i]))] += 1
            else:
                below['(self)'] += 1
            leaf[syms[0]] += 1
            break
for line in sys.stdin:
    if line and not line[0].isspace() and line.strip():
        flush(); frames = []
        cur = line.split()[0]
    elif line.strip():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            s = re.sub(r'\+0x[0-9a-f]+', '', parts[1])
            s = re.sub(r' \(.*\)$', '', s)
            frames.append(s[:150])
flush()
print(f"samples {tot}, with {anchor}: {hit} ({100*hit/max(tot,1):.1f}%)")
for k, v in below.most_common(25): print(f"{v:6d} {100*v/max(tot,1):5.1f}%  {k}")
print("-- leaves")
for k, v in leaf.most_common(15): print(f"{v:6d} {100*v/max(tot,1):5.1f}%  {k}")
