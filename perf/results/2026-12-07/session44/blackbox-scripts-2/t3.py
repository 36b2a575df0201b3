#!/usr/bin/env python3
# t3.py PORT MODE FIRST_ADDR NADDR PER DURATION [RECONNECT]
# MODE: fake (ListGroups with made-up token every 0.5s), silent (raw TCP, nothing sent),
#       half (sends first handshake msg, then nothing), valid (logs in once as l3, then ListGroups w/ real token every 0.5s)
import sys, os, time, threading, socket, random
# noisecli.py is the first check's, in ../blackbox-scripts.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'blackbox-scripts')); from noisecli import *
port=int(sys.argv[1]); mode=sys.argv[2]; a0=int(sys.argv[3]); na=int(sys.argv[4]); per=int(sys.argv[5]); dur=float(sys.argv[6]); recon=len(sys.argv)>7 and sys.argv[7]=='1'
end=time.time()+dur
stats={'opened':0,'closed':0,'hs_fail':0,'answers':0,'granted':0,'refused':0,'errs':{}}
lock=threading.Lock()
def bump(k,n=1):
    with lock: stats[k]+=n
tok=None
if mode=='valid':
    l=Link(('127.0.0.1',port),src='127.0.0.%d'%a0)
    k,r=l.request(login('l3','pw','127.0.0.%d:1'%a0)); assert r[0]==1,r; tok=r[1:17]
    print('got token', tok.hex()[:8], flush=True)
def worker(src):
    while time.time()<end:
        try:
            if mode=='silent':
                s=socket.socket(); s.bind((src,0)); s.connect(('127.0.0.1',port)); bump('opened')
                s.settimeout(1)
                while time.time()<end:
                    try:
                        if s.recv(1)==b'': break
                    except socket.timeout: pass
                bump('closed'); s.close()
            elif mode=='half':
                s=socket.socket(); s.bind((src,0)); s.connect(('127.0.0.1',port)); bump('opened')
                send_rec(s, os.urandom(32)); s.settimeout(1)
                while time.time()<end:
                    try:
                        if s.recv(100)==b'': break
                    except socket.timeout: pass
                bump('closed'); s.close()
            else:
                try: l=Link(('127.0.0.1',port),src=src,timeout=5)
                except Exception as e:
                    bump('hs_fail'); time.sleep(0.5); 
                    if not recon: return
                    continue
                bump('opened')
                while time.time()<end:
                    t = tok if mode=='valid' else os.urandom(16)
                    k,r=l.request(list_groups(t)); bump('answers')
                    bump('granted' if r[0]!=5 else 'refused')
                    time.sleep(0.5)
        except Exception as e:
            with lock: stats['errs'][type(e).__name__]=stats['errs'].get(type(e).__name__,0)+1
            bump('closed')
        if not recon: return
        time.sleep(0.2)
ths=[]
for i in range(na):
    for j in range(per):
        t=threading.Thread(target=worker,args=('127.0.0.%d'%(a0+i),),daemon=True); t.start(); ths.append(t)
        time.sleep(0.01)
t0=time.time()
while time.time()<end:
    time.sleep(5)
    with lock: print('%5.0fs %s'%(time.time()-t0, {k:v for k,v in stats.items()}), flush=True)
