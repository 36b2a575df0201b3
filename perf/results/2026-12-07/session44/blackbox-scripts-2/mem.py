#!/usr/bin/env python3
# mem.py PORT NLINKS NADDR RATE(bytes/s per link) MAXDUR
# Each link: Noise handshake, then a 16 MiB request frame (UploadFile, variant 11, made-up token)
# trickled at RATE; reports when/how the tracker ends each link.
import sys, os, time, threading, struct
# noisecli.py is the first check's, in ../blackbox-scripts.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'blackbox-scripts')); from noisecli import *
port=int(sys.argv[1]); n=int(sys.argv[2]); na=int(sys.argv[3]); rate=float(sys.argv[4]); maxdur=float(sys.argv[5])
FR=16*1024*1024
st={'hs':0,'hs_fail':0,'sent_all':0,'closed':0,'answered':0,'bytes':0}; lk=threading.Lock(); outc={}
def b(k,v=1):
    with lk: st[k]+=v
t0=time.time()
def w(i):
    src='127.0.0.%d'%(2+i%na)
    try: l=Link(('127.0.0.1',port),src=src,timeout=30)
    except Exception as e:
        b('hs_fail'); return
    b('hs')
    hdr=struct.pack('>II',FR,1)+b'\x0b'+os.urandom(16)
    left=FR-len(hdr); data=hdr; CH=65000; sent=0
    try:
        while True:
            chunk=data+os.urandom(0)+bytes(min(CH-len(data),left))
            left-=len(chunk)-len(data); data=b''
            send_rec(l.s, l.tx.encrypt(nonce(l.tn), chunk, b'')); l.tn+=1
            sent+=len(chunk); b('bytes',len(chunk))
            if left<=0: break
            time.sleep(len(chunk)/rate)
            if time.time()-t0>maxdur: raise TimeoutError('maxdur')
        b('sent_all')
        l.s.settimeout(20); k,r=l.recv_frame(); b('answered')
        with lk: outc['answer %s %s'%(k,r[:4].hex())]=outc.get('answer %s %s'%(k,r[:4].hex()),0)+1
    except Exception as e:
        b('closed')
        key='%s after %dMiB at %.0fs'%(type(e).__name__, sent>>20, time.time()-t0)
        key=type(e).__name__
        with lk: outc[key]=outc.get(key,0)+1
ts=[threading.Thread(target=w,args=(i,),daemon=True) for i in range(n)]
for t in ts: t.start(); time.sleep(0.02)
while any(t.is_alive() for t in ts) and time.time()-t0<maxdur+25:
    time.sleep(2)
    with lk: print('%5.0fs %s %s'%(time.time()-t0, dict(st), dict(outc)), flush=True)
print('END', dict(st), dict(outc), flush=True)
