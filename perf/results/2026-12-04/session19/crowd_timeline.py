import re,glob,datetime,collections,sys
ansi=re.compile(r'\x1b\[[0-9;]*m')
ev=[]
for f in glob.glob('get-*.log'):
    i=int(f[4:-4])
    for l in open(f):
        l=ansi.sub('',l)
        if 'piece verified' not in l: continue
        ts=l.split()[0]
        t=datetime.datetime.fromisoformat(ts.replace('Z','+00:00')).timestamp()
        piece=int(re.search(r'piece=(\d+)',l).group(1)); addr=re.search(r'addr=(\S+)',l).group(1)
        ev.append((t,i,piece,addr))
ev.sort(); t0=float(open(sys.argv[1]).read()) if len(sys.argv)>1 else ev[0][0]
sent=collections.Counter()
bins=collections.defaultdict(lambda:[0,0,0])
per=collections.defaultdict(lambda:[0,0])
for t,i,p,a in ev:
    b=int((t-t0)*2)/2
    if a.endswith(':7100'):
        bins[b][0]+=1; sent[p]+=1
        if sent[p]>1: bins[b][2]+=1; per[i][1]+=1
        else: per[i][0]+=1
    else: bins[b][1]+=1
print("first verify at +%.2f"%(ev[0][0]-t0))
for b in sorted(bins): print("%4.1f seed %2d (dups %2d) peers %3d"%(b,bins[b][0],bins[b][2],bins[b][1]))
print("distinct from seed", len(sent), "total from seed", sum(sent.values()))
print("per downloader: first/dup from seed", dict(sorted(per.items())))
