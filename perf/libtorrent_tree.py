#!/usr/bin/python3
"""libtorrent (rasterbar 2.0, Debian python3-libtorrent) fetching a directory
tree as one multi-file torrent on loopback: the yardstick for ringshare's
bulk `get` (perf/bulk.sh).

One seeder session and one leecher session, each in its own process, on
127.0.0.1; no tracker, DHT or discovery; the leecher is told the seeder.
Same settings as ../shared/bench/libtorrent_swarm.py (TCP only, plaintext
wire protocol, larger queues). Timed: from the leecher's add_torrent() to
every piece downloaded and SHA1-verified. The copy is compared file by
file afterwards (outside the timing).

With LEECHER=aria2c the leecher is aria2c (Debian's aria2, installed if
missing) instead: it finds the seeder through a minimal HTTP tracker this
script runs on 127.0.0.1 (aria2c has no way to be told a peer), with DHT,
local discovery and peer exchange off and no file preallocation; timed
from aria2c's start to its exit (`--seed-time=0`: every piece verified).

Off loopback (perf/bulk_wan.sh LIBTORRENT=1 runs it in the leech host's
namespace): SEED_IP is the seeder's address and SEED_PREFIX the command that
starts a process on its host (e.g. 'ip netns exec NS'); LEECH_IP the
leecher's address. The HTTP tracker for aria2c then lists SEED_IP.

Usage: [LEECHER=aria2c] /usr/bin/python3 perf/libtorrent_tree.py DIR [RUNS]
Last line: 'libtorrent-tree: N files, B bytes: X MB/s, Y files/s (median of RUNS)'
('aria2c-tree: ...' with LEECHER=aria2c).
"""
import datetime
import filecmp
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import libtorrent as lt

PIECE = 512 * 1024


SEED_IP = os.environ.get("SEED_IP", "127.0.0.1")
LEECH_IP = os.environ.get("LEECH_IP", "127.0.0.1")


def session(port, encryption=2, ip="127.0.0.1"):
    return lt.session({
        "listen_interfaces": "%s:%d" % (ip, port),
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "in_enc_policy": encryption, "out_enc_policy": encryption,
        "send_buffer_watermark": 16 * 1024 * 1024, "send_buffer_low_watermark": 1024 * 1024,
        "send_buffer_watermark_factor": 150, "max_queued_disk_bytes": 64 * 1024 * 1024,
        "max_out_request_queue": 2000, "max_allowed_in_request_queue": 4000,
        "max_peer_recv_buffer_size": 8 * 1024 * 1024, "hashing_threads": 2, "aio_threads": 4,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })


def add(ses, torrent, save):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    return ses.add_torrent(atp), atp.ti


def wait(ses, h, pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred(h.status()):
            return
        for a in ses.pop_alerts():
            if isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                raise RuntimeError(a.message())
        ses.wait_for_alert(20)
    raise TimeoutError(str(h.status().state))


def seeder(torrent, save, port, encryption):
    ses = session(port, encryption, SEED_IP)
    h, _ = add(ses, torrent, save)
    wait(ses, h, lambda st: st.is_seeding, 1800)
    print("READY", flush=True)
    sys.stdin.readline()


def leecher(torrent, save, port, seed_port):
    ses = session(port, 2, LEECH_IP)
    t0 = time.monotonic()
    h, ti = add(ses, torrent, save)
    h.connect_peer((SEED_IP, seed_port))
    wait(ses, h, lambda st: st.is_seeding and st.num_pieces == ti.num_pieces(), 1800)
    print(time.monotonic() - t0, flush=True)
    ses.remove_torrent(h)
    time.sleep(0.2)


def tracker(seed_port):
    """An HTTP tracker that answers every announce with the seeder alone
    (compact peer list): how aria2c learns of it. Returns its port."""
    peers = bytes(int(x) for x in SEED_IP.split(".")) + seed_port.to_bytes(2, "big")
    body = b"d8:intervali1800e5:peers6:" + peers + b"e"

    class Announce(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Announce)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def aria2c(torrent, dest, announce):
    """Fetches the torrent with aria2c. Returns the seconds it ran and the
    seconds from its first connection to the seeder to its last piece
    (its log's timestamps): aria2c works in one-second ticks, so about
    three seconds of each run are its own waits (before it connects, before
    its final announce)."""
    log = os.path.join(dest, "aria2c.log")
    t0 = time.monotonic()
    subprocess.run(["aria2c", "--quiet=true", "--log=" + log, "--log-level=info", "--seed-time=0", "--enable-dht=false",
                    "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
                    "--file-allocation=none", "--listen-port=17883", "--bt-tracker=" + announce,
                    "--bt-exclude-tracker=*", "--dir=" + dest, torrent], check=True)
    wall = time.monotonic() - t0
    start = end = None
    for line in open(log, errors="replace"):
        stamp = " ".join(line.split()[:2])
        if start is None and "PeerInitiateConnectionCommand" in line:
            start = stamp
        elif start is not None and end is None and "The download was complete." in line:
            end = stamp
    os.remove(log)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    transfer = (datetime.datetime.strptime(end, fmt) - datetime.datetime.strptime(start, fmt)).total_seconds()
    return wall, transfer


def main():
    if sys.argv[1] in ("seed", "leech"):
        role, torrent, save = sys.argv[1], sys.argv[2], sys.argv[3]
        if role == "seed":
            seeder(torrent, save, int(sys.argv[4]), int(sys.argv[5]))
        else:
            leecher(torrent, save, int(sys.argv[4]), int(sys.argv[5]))
        return
    src = os.path.abspath(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="lt_tree.")
    try:
        fs = lt.file_storage()
        lt.add_files(fs, src)
        ct = lt.create_torrent(fs, PIECE, flags=lt.create_torrent.v1_only)
        lt.set_piece_hashes(ct, os.path.dirname(src))
        torrent = os.path.join(work, "tree.torrent")
        with open(torrent, "wb") as f:
            f.write(lt.bencode(ct.generate()))
        files, size = fs.num_files(), fs.total_size()
        use_aria2c = os.environ.get("LEECHER") == "aria2c"
        # aria2c tries an encrypted (MSE) handshake first and retries
        # plain a second later if the seeder refuses it: the seeder
        # accepts it (the payload stays plain, aria2c's default).
        seed = subprocess.Popen(os.environ.get("SEED_PREFIX", "").split() + [sys.executable, __file__, "seed", torrent, os.path.dirname(src), "17881",
                                 "1" if use_aria2c else "2"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert seed.stdout.readline().strip() == "READY"
        if use_aria2c and shutil.which("aria2c") is None:
            subprocess.run(["apt-get", "install", "-y", "aria2"], check=True, capture_output=True)
        announce = "http://127.0.0.1:%d/announce" % tracker(17881) if use_aria2c else ""
        secs, transfers = [], []
        for r in range(runs):
            dest = os.path.join(work, "dl%d" % r)
            os.makedirs(dest)
            if use_aria2c:
                s, t = aria2c(torrent, dest, announce)
                transfers.append(t)
            else:
                out = subprocess.run([sys.executable, __file__, "leech", torrent, dest, "17882", "17881"],
                                     check=True, capture_output=True, text=True).stdout
                s = float(out.strip().splitlines()[-1])
            cmp = filecmp.dircmp(src, os.path.join(dest, os.path.basename(src)))
            bad = cmp.left_only + cmp.right_only + cmp.diff_files
            print("run %d: %.2f s, %.1f MB/s, %.0f files/s%s%s" % (
                r + 1, s, size / s / 1e6, files / s,
                "; first connection to last piece %.2f s, %.1f MB/s" % (t, size / t / 1e6) if use_aria2c else "",
                " (copy differs: %s)" % bad[:3] if bad else ""), flush=True)
            secs.append(s)
            shutil.rmtree(dest)
        seed.stdin.write("quit\n")
        seed.stdin.flush()
        seed.wait(timeout=30)
        m = statistics.median(secs)
        print("%s-tree: %d files, %d bytes: %.1f MB/s, %.0f files/s (median of %d)%s" % (
            "aria2c" if use_aria2c else "libtorrent", files, size, size / m / 1e6, files / m, runs,
            "; first connection to last piece %.1f MB/s" % (size / statistics.median(transfers) / 1e6)
            if use_aria2c else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
