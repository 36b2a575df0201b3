import sys, collections, re
comm, anchor = sys.argv[1], sys.argv[2]; depth=int(sys.argv[3]) if len(sys.argv)>3 else 3
tot=0; hit=0; c=collections.Counter(); cur=None; frames=[]
def flush():
    global tot, hit
    if cur!=comm or not frames: return
    tot+=1
    for i,s in enumerate(frames):
        if anchor in s:
            hit+=1; c[' <- '.join(frames[i+1:i+1+depth])]+=1; break
for line in sys.stdin:
    if line and not line[0].isspace() and line.strip():
        flush(); frames=[]; cur=line.split()[0]
    elif line.strip():
        p=line.strip().split(None,1)
        if len(p)==2:
            s=re.sub(r'\+0x[0-9a-f]+','',p[1]); s=re.sub(r' \(.*\)$','',s); s=s.replace('ringshare_engine::','').replace('core::','')
            frames.append(s[:90])
flush(); print("samples",tot,"hit",hit)
for k,v in c.most_common(12): print(f"{v:6d}  {k}")
