import sys, collections, re
comm = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 60
tot = 0; inc = collections.Counter(); selfc = collections.Counter()
cur=None; frames=[]
def flush():
    global tot
    if cur != comm or not frames: return
    tot += 1
    for s in set(frames): inc[s] += 1
    selfc[frames[0]] += 1
for line in sys.stdin:
    if line and not line[0].isspace() and line.strip():
        flush(); frames=[]; cur=line.split()[0]
    elif line.strip():
        p=line.strip().split(None,1)
        if len(p)==2:
            s=re.sub(r'\+0x[0-9a-f]+','',p[1]); s=re.sub(r' \(.*\)$','',s); frames.append(s[:140])
flush()
print("samples", tot)
for k,v in inc.most_common(n): print(f"{v:6d} {100*v/tot:5.1f}%  {k}")
