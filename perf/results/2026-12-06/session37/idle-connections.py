import socket, subprocess, sys, time, os, re
b, port = sys.argv[1], int(sys.argv[2])
d = f"/tmp/idle-{port}"; os.makedirs(d, exist_ok=True)
open(f"{d}/ti.txt","w").write(f"127.0.0.1:{port}\n")
p = subprocess.Popen([b, f"{d}/ti.txt", "1", "--data-dir", f"{d}/data"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
p.stdout.readline(); p.stdout.readline()
def rss(): return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1))//1024
print("start", rss(), "MiB")
socks=[]
for ip in range(10):
    for i in range(200):
        s=socket.socket(); s.connect(("127.0.0.1",port)); socks.append(s)
time.sleep(1.5)
print("2000 idle", rss(), "MiB")
for s in socks: s.close()
time.sleep(1)
print("closed", rss(), "MiB")
p.terminate(); p.wait()
import shutil; shutil.rmtree(d)
