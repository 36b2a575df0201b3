import collections, sys
rows=[l.split() for l in open(sys.argv[1])]
b=collections.defaultdict(list)
for r in rows:
    t=float(r[0]); i=r.index('|')
    up=[float(x) for x in r[2:i]]; dn=[float(x) for x in r[i+2:]]
    b[int(t*2)/2].append((up,dn))
for k in sorted(b):
    n=len(b[k][0][0])
    ups=[sum(u[0][j] for u in b[k])/len(b[k]) for j in range(n)]
    dns=[sum(u[1][j] for u in b[k])/len(b[k]) for j in range(n)]
    print("%4.1f seed up %3.0f crowd up %3.0f (min %3.0f max %3.0f) crowd down %3.0f  ups %s" % (k, ups[0], sum(ups[1:])/(n-1), min(ups[1:]), max(ups[1:]), sum(dns[1:])/(n-1), ' '.join('%3.0f'%u for u in ups[1:])))
