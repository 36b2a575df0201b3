import collections,sys
d=collections.defaultdict(list)
for l in open(sys.argv[1]):
    p=l.split()
    if len(p)<6: continue
    d[p[0]].append((float(p[1].replace('MB/s','')),float(p[3]),float(p[5])))
for k,v in d.items():
    n=len(v); print(k, n, "MB/s %.0f"%(sum(x[0] for x in v)/n), "get cpu %.3f"%(sum(x[1] for x in v)/n), "seed cpu %.3f"%(sum(x[2] for x in v)/n), " runs:", " ".join("%.0f"%x[0] for x in v))
