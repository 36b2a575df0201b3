#!/usr/bin/env python3
# flood.py PORT FIRST_ADDR NADDR PER DURATION RECON_DELAY(-1 = no reconnect)
# silent TCP connections (send nothing) from 127.0.0.FIRST.. to 127.0.0.1:PORT
import sys, time, threading, socket
port=int(sys.argv[1]); a0=int(sys.argv[2]); na=int(sys.argv[3]); per=int(sys.argv[4]); dur=float(sys.argv[5]); rd=float(sys.argv[6])
end=time.time()+dur; st={'conn':0,'closed':0,'err':0,'live':0}; lk=threading.Lock()
def b(k,n=1):
    with lk: st[k]+=n
def w(src):
    while time.time()<end:
        try:
            s=socket.socket(); s.bind((src,0)); s.settimeout(2); s.connect(('127.0.0.1',port)); b('conn'); b('live')
            s.settimeout(0.5)
            while time.time()<end:
                try:
                    if s.recv(1)==b'': break
                except socket.timeout: pass
                except OSError: break
            b('closed'); b('live',-1); s.close()
        except Exception as e:
            b('err'); time.sleep(0.2)
        if rd<0: return
        if rd>0: time.sleep(rd)
ts=[]
for i in range(na):
    for j in range(per):
        t=threading.Thread(target=w,args=('127.0.0.%d'%(a0+i),),daemon=True); t.start(); ts.append(t)
t0=time.time()
while time.time()<end:
    time.sleep(2)
    with lk: print('%5.0fs %s'%(time.time()-t0, dict(st)), flush=True)
