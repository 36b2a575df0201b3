#!/usr/bin/env python3
# same as t7c, but the child starts with SIGINT at its default disposition (as from a terminal)
import subprocess, time, signal, os, sys
W="/tmp/h45/w7c"; RS="/tmp/h45/bin/ringshare"
for sig,d in [(signal.SIGINT,0.005),(signal.SIGINT,0.01),(signal.SIGINT,0.02),(signal.SIGINT,0.03),(signal.SIGINT,0.04)]:
    p=subprocess.Popen([RS,"share","--trackers",W+"/trackers.txt","--user","alice","--password-file",W+"/alice.pw","--state-dir",W+"/st-a","g0",W+"/tree"],stdout=subprocess.PIPE,stderr=subprocess.STDOUT)
    time.sleep(d); p.send_signal(sig)
    try: rc=p.wait(10); st=f"exited rc={rc}"
    except subprocess.TimeoutExpired: st="STILL RUNNING"; p.kill(); p.wait()
    out=p.stdout.read().decode().strip().splitlines()
    print(f"{sig.name} at {d}s: {st}; last: {out[-1][:110] if out else ''}")
