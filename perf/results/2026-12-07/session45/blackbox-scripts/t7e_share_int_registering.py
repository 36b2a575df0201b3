#!/usr/bin/env python3
# share (port picked by the system) of 3000 files into fresh groups, SIGINT at small delays;
# then list the group as another member: what stays listed after "interrupted as the files were registered"?
import subprocess, time, signal, os, random
W="/tmp/h45/w7e"; RS="/tmp/h45/bin/ringshare"
T=["--trackers",W+"/trackers.txt"]
def ls(g):
    r=subprocess.run([RS,"ls",*T,"--user","bob","--password-file",W+"/bob.pw","--state-dir",W+"/st-bls",g],capture_output=True,text=True)
    return r.stdout.splitlines(), r.stderr.strip()
for i,d in enumerate([float(x) for x in os.environ.get("DELAYS","0.04 0.05 0.06 0.07 0.08 0.09 0.1 0.11").split()]):
    g=f"g{i+1}"
    p=subprocess.Popen([RS,"share",*T,"--user","alice","--password-file",W+"/alice.pw","--state-dir",W+"/st-a",g,W+"/tree"],stdout=subprocess.PIPE,stderr=subprocess.STDOUT)
    time.sleep(d); p.send_signal(signal.SIGINT)
    try: rc=p.wait(20)
    except subprocess.TimeoutExpired: rc="HANG"; p.kill(); p.wait()
    out=[l for l in p.stdout.read().decode().splitlines() if "I/O backend" not in l]
    lines,err=ls(g)
    print(f"SIGINT at {d}s: rc={rc}; out: {' | '.join(l[:90] for l in out[-3:])}\n    ls {g}: {len(lines)} listed, {sum(1 for l in lines if ' 1 peer' in l)} with 1 peer {err[:100]}")
