import re,sys,collections
d=collections.defaultdict(lambda: collections.defaultdict(list))
for f in sys.argv[1:]:
    b=None
    for l in open(f):
        m=re.match(r'== (\S+)',l)
        if m: b=m.group(1); continue
        m=re.search(r'([\d.]+)MB/s',l)
        if m and l.startswith('run'): d[b]['mbps'].append(float(m.group(1)))
        m=re.search(r'seed minflt (\d+) tracker cpu ([\d.]+) seeder cpu ([\d.]+)',l)
        if m: d[b]['seedflt'].append(int(m.group(1))); d[b]['tracker'].append(float(m.group(2))); d[b]['seed'].append(float(m.group(3)))
        m=re.search(r'get user ([\d.]+) sys ([\d.]+) wall ([\d.]+) minflt (\d+)',l)
        if m: d[b]['getcpu'].append(float(m.group(1))+float(m.group(2))); d[b]['getflt'].append(int(m.group(4)))
for b,v in d.items():
    print(b, ' '.join(f"{k} n={len(x)} mean={sum(x)/len(x):.3f} [{min(x)}-{max(x)}]" for k,x in v.items()))
