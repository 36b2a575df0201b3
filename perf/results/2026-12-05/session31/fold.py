import collections,sys,re
samples=[];cur=None
for line in open(sys.argv[1]):
    if not line.strip():
        if cur: samples.append(cur)
        cur=None
        continue
    if not line[0].isspace():
        cur=[line.split()[0],[]]
    elif cur is not None:
        p=line.strip().split(None,1)
        cur[1].append(p[1] if len(p)>1 else p[0])
if cur: samples.append(cur)
tot=len(samples)
bycomm=collections.Counter(s[0] for s in samples)
print(tot, bycomm.most_common(12))
pat=sys.argv[2] if len(sys.argv)>2 else 'memmove'
mm=collections.Counter()
for comm,st in samples:
    if st and pat in st[0]:
        fr=[f for f in st[1:] if 'ringshare' in f or 'tokio' in f or 'rustls' in f or 'ring::' in f][:3]
        mm[(comm,' <- '.join(x[:100] for x in fr))]+=1
n=sum(mm.values()); print(pat, n, "%.1f%%"%(100*n/tot))
for k,v in mm.most_common(15): print(v,k)
leaf=collections.Counter()
for comm,st in samples:
    if st: leaf[(comm.split('-')[0] if comm.startswith('hash') else comm, st[0][:60])]+=1
for k,v in leaf.most_common(40): print(v,k)
