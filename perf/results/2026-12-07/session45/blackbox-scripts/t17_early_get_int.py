#!/usr/bin/env python3
# SIGINT to `get` (one-file and bulk) at early moments; what is left on disk, what is said
import subprocess, time, signal, os, sys
W=sys.argv[1]; RS="/tmp/h45/bin/ringshare"; T=["--trackers",W+"/trackers.txt"]
for form in ["one","bulk"]:
  for i,d in enumerate([0.1,0.2,0.3,0.4,0.5,0.6,0.8,1.0]):
    dest=f"{W}/e-{form}-{i}"
    args=["team","big",dest+"/"] if form=="one" else ["team","big*",dest]
    p=subprocess.Popen([RS,"get",*T,"--user","bob","--password-file",W+"/bob.pw","--state-dir",f"{W}/st-e{form}{i}","--quiet",*args],stdout=subprocess.PIPE,stderr=subprocess.STDOUT)
    time.sleep(d); p.send_signal(signal.SIGINT)
    try: rc=p.wait(20)
    except subprocess.TimeoutExpired: rc="HANG"; p.kill(); p.wait()
    out=[l for l in p.stdout.read().decode().splitlines() if "I/O backend" not in l]
    left=sorted(os.listdir(dest)) if os.path.isdir(dest) else ("(dest dir absent)")
    print(f"{form} SIGINT@{d}s rc={rc} left={left} :: {' | '.join(l[:150] for l in out[-2:])}")
