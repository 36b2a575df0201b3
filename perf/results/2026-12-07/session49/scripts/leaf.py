import sys, collections, re
comm=sys.argv[1]; scale=float(sys.argv[4])
def load(fn):
    c=collections.Counter(); cur=None; fr=[]; tot=0
    for line in open(fn):
        if line and not line[0].isspace() and line.strip():
            if cur and cur.startswith(comm) and fr: c[fr[0]]+=1; tot+=1
            cur=line.split()[0]; fr=[]
        elif line.strip():
            p=line.strip().split(None,1)
            if len(p)==2: fr.append(re.sub(r'\+0x[0-9a-f]+','',p[1]).split(' (')[0][:100])
    return tot,c
ta,a=load(sys.argv[2]); tb,b=load(sys.argv[3])
print(ta,tb)
d={k:a[k]-b[k]*scale for k in set(a)|set(b)}
for k,v in sorted(d.items(), key=lambda x:-x[1])[:35]: print(f"{v:7.0f} {a[k]:5d} {b[k]:5d} {k}")
