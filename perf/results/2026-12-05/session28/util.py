import time,sys
dur=float(sys.argv[1]) if len(sys.argv)>1 else 12
def rd():
    v=list(map(int,open('/proc/stat').readline().split()[1:]))
    d=[l.split() for l in open('/proc/diskstats') if l.split()[2]=='vda'][0]
    return sum(v), v[3], v[4], int(d[7]), int(d[9]), int(d[10])  # writes completed, sectors written, ms writing
t0=time.time(); a=rd()
while time.time()-t0<dur:
    time.sleep(0.2); b=rd()
    tot=b[0]-a[0]
    print(f"{time.time()-t0:4.1f} busy {100*(tot-(b[1]-a[1])-(b[2]-a[2]))/max(tot,1):3.0f} iow {100*(b[2]-a[2])/max(tot,1):3.0f} wr {b[3]-a[3]:5d} MB {(b[4]-a[4])/2048:6.1f} wms {b[5]-a[5]}")
    a=b
