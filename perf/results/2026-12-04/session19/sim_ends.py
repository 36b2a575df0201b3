import json,sys,collections
d=json.load(open(sys.argv[1]))
b=max(d['bound_seed_up_s'],d['bound_down_s'],d['bound_total_up_s'])
e=[x for x in d['downloader_ends'] if x['done_s'] is not None]
e.sort(key=lambda x:x['done_s'])
n=len(e)
print('bound',round(b,1),'n',n)
# by latency bucket: mean done and share in the slowest 10%
slow=set(x['host'] for x in e[int(0.9*n):])
byl=collections.defaultdict(list)
for x in e: byl[x['latency_ms']//10*10].append(x)
for l in sorted(byl):
    xs=byl[l]
    print('lat %2d-%2d ms: %4d hosts, mean done %.2fx, in slowest 10%%: %d, mean uploaded %.0f MiB'%(l,l+9,len(xs),sum(x['done_s'] for x in xs)/len(xs)/b, sum(1 for x in xs if x['host'] in slow), sum(x['uploaded'] for x in xs)/len(xs)/2**20))
# host index (join order/ids) of the slowest
print('slowest hosts idx', sorted(x['host'] for x in e[-15:]))
