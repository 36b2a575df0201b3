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

Usage: /usr/bin/python3 perf/libtorrent_tree.py DIR [RUNS]
Last line: 'libtorrent-tree: N files, B bytes: X MB/s, Y files/s (median of RUNS)'.
"""
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import libtorrent as lt

PIECE = 512 * 1024


def session(port):
    return lt.session({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "in_enc_policy": 2, "out_enc_policy": 2,
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


def seeder(torrent, save, port):
    ses = session(port)
    h, _ = add(ses, torrent, save)
    wait(ses, h, lambda st: st.is_seeding, 1800)
    print("READY", flush=True)
    sys.stdin.readline()


def leecher(torrent, save, port, seed_port):
    ses = session(port)
    t0 = time.monotonic()
    h, ti = add(ses, torrent, save)
    h.connect_peer(("127.0.0.1", seed_port))
    wait(ses, h, lambda st: st.is_seeding and st.num_pieces == ti.num_pieces(), 1800)
    print(time.monotonic() - t0, flush=True)
    ses.remove_torrent(h)
    time.sleep(0.2)


def main():
    if sys.argv[1] in ("seed", "leech"):
        role, torrent, save = sys.argv[1], sys.argv[2], sys.argv[3]
        if role == "seed":
            seeder(torrent, save, int(sys.argv[4]))
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
        seed = subprocess.Popen([sys.executable, __file__, "seed", torrent, os.path.dirname(src), "17881"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert seed.stdout.readline().strip() == "READY"
        secs = []
        for r in range(runs):
            dest = os.path.join(work, "dl%d" % r)
            os.makedirs(dest)
            out = subprocess.run([sys.executable, __file__, "leech", torrent, dest, "17882", "17881"],
                                 check=True, capture_output=True, text=True).stdout
            s = float(out.strip().splitlines()[-1])
            cmp = filecmp.dircmp(src, os.path.join(dest, os.path.basename(src)))
            bad = cmp.left_only + cmp.right_only + cmp.diff_files
            print("run %d: %.2f s, %.1f MB/s, %.0f files/s%s" % (
                r + 1, s, size / s / 1e6, files / s, " (copy differs: %s)" % bad[:3] if bad else ""), flush=True)
            secs.append(s)
            shutil.rmtree(dest)
        seed.stdin.write("quit\n")
        seed.stdin.flush()
        seed.wait(timeout=30)
        m = statistics.median(secs)
        print("libtorrent-tree: %d files, %d bytes: %.1f MB/s, %.0f files/s (median of %d)" % (
            files, size, size / m / 1e6, files / m, runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
