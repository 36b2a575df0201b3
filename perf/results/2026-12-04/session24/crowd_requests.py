# crowd_requests.py ALL_DONE_S [HOSTS]: run in a perf/crowd.sh work directory kept with
# KEEP=1 RUST_LOG=ringshare_engine=trace; prints pieces held per host over time and, for
# the last host (or HOSTS, comma-separated), every request (R), busy (B), reject (J),
# takeover (T) and verified piece (V), run together: 2.17B53@0 is a busy for piece 53 from
# the seed (source 0) at 2.17 s.
import re,glob,datetime,collections,sys,json
ansi=re.compile(r'\x1b\[[0-9;]*m')
alld=float(sys.argv[1]); who=[int(x) for x in sys.argv[2].split(',')] if len(sys.argv)>2 else None
ev=[]
def ts(l): return datetime.datetime.fromisoformat(l.split()[0].replace('Z','+00:00')).timestamp()
def src(a): return 0 if a.endswith('.1:7100') else int(a.split('.')[3].split(':')[0])-1
for f in glob.glob('get-*.log'):
    i=int(f[4:-4])
    for l in open(f):
        l=ansi.sub('',l)
        m=re.search(r'(piece verified|piece requested|request refused|request taken over).*?piece=(\d+).*?addr=(\S+)',l)
        if not m: continue
        kind={'piece verified':'V','piece requested':'R','request refused':'X','request taken over':'T'}[m.group(1)]
        if kind=='X': kind='B' if 'busy' in l else 'J'
        ev.append((ts(l),i,kind,int(m.group(2)),src(m.group(3))))
ev.sort()
ends={int(f[4:]):float(open(f).read().split()[1]) for f in glob.glob('end-*')}
t0=max(ends.values())-alld
ev=[(round(t-t0,2),i,k,p,s) for t,i,k,p,s in ev]
print('ends', sorted((round(v-t0,2),k) for k,v in ends.items()))
for T in [0.5,1,1.5,2,2.5,3,4,5,6,7,8]:
    have=collections.Counter(i for t,i,k,p,s in ev if t<=T and k=='V')
    print(T, [have[i] for i in range(1,13)])
for h in (who or [max(ends,key=ends.get)]):
    print('== host',h)
    line=[]
    for t,i,k,p,s in ev:
        if i==h: line.append(f"{t}{k}{p}@{s}")
    print(' '.join(line))
