import sys, collections, re
# cmp.py COMM small.txt one.txt scale : inclusive counts side by side, small - one*scale
comm=sys.argv[1]; scale=float(sys.argv[4])
def load(fn):
    tot=0; inc=collections.Counter(); cur=None; frames=[]
    def flush():
        nonlocal tot
        if cur!=comm or not frames: return
        tot+=1
        for s in set(frames): inc[s]+=1
    for line in open(fn):
        if line and not line[0].isspace() and line.strip():
            flush(); frames=[]; cur=line.split()[0]
        elif line.strip():
            p=line.strip().split(None,1)
            if len(p)==2:
                s=re.sub(r'\+0x[0-9a-f]+','',p[1]); s=re.sub(r' \(.*\)$','',s); frames.append(s[:120])
    flush(); return tot, inc
ts, a = load(sys.argv[2]); to, b = load(sys.argv[3])
print("samples", ts, to)
d = {k: a[k]-b[k]*scale for k in set(a)|set(b)}
for k,v in sorted(d.items(), key=lambda x:-x[1])[:70]:
    print(f"{v:8.0f} {a[k]:6d} {b[k]:6d}  {k}")
