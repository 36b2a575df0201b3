#!/usr/bin/python3
"""One node of a libtorrent (rasterbar 2.0, Debian python3-libtorrent) flash
crowd on the namespace testbed: the yardstick `perf/crowd.sh` runs with
LIBTORRENT=1 on the same hosts, links and file as ringshare's crowd.

Roles (each node its own process, started in its host's namespace):
  torrent FILE OUT        make a v1 torrent of FILE (512 KiB pieces) at OUT
  seed TORRENT DIR IP     seed DIR's copy of the file on IP:6881; prints
                          READY once its copy is checked, then seeds
                          until killed
  leech TORRENT DIR IP PEER...
                          fetch into DIR listening on IP:6881, told every
                          PEER (IP:PORT: the seeder and every other
                          downloader, as in #12's measurement); exits when
                          every piece is downloaded and SHA1-verified,
                          printing JSON with its end time (Unix seconds)

Settings are those of ../shared/bench/libtorrent_swarm.py: no tracker, DHT or
discovery, TCP only, plaintext wire protocol, larger queues. libtorrent's
own choker and piece picker, unchanged.
"""
import json
import sys
import time

import libtorrent as lt

PIECE = 512 * 1024
PORT = 6881


def session(ip):
    return lt.session({
        "listen_interfaces": "%s:%d" % (ip, PORT),
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
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


def check_alerts(ses):
    for a in ses.pop_alerts():
        if isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
            raise RuntimeError(a.message())


def make_torrent(path, out):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, PIECE, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, path.rsplit("/", 1)[0] or ".")
    with open(out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def seed(torrent, save, ip):
    ses = session(ip)
    h, _ = add(ses, torrent, save)
    deadline = time.monotonic() + 600
    while not h.status().is_seeding:
        if time.monotonic() > deadline:
            raise TimeoutError("the seeder did not finish checking its copy")
        check_alerts(ses)
        ses.wait_for_alert(100)
    print("READY", flush=True)
    while True:
        ses.wait_for_alert(1000)
        ses.pop_alerts()


def leech(torrent, save, ip, peers, timeout=600):
    ses = session(ip)
    h, ti = add(ses, torrent, save)
    for p in peers:
        host, port = p.rsplit(":", 1)
        if host != ip:
            h.connect_peer((host, int(port)))
    deadline = time.monotonic() + timeout
    ok = False
    while time.monotonic() < deadline:
        check_alerts(ses)
        st = h.status()
        if st.is_seeding and st.num_pieces == ti.num_pieces():
            ok = True
            break
        ses.wait_for_alert(20)
    end = time.time()
    print(json.dumps({"ok": ok, "end": end, "pieces": h.status().num_pieces,
                      "uploaded": h.status().all_time_upload}), flush=True)
    ses.remove_torrent(h)
    return 0 if ok else 1


def main():
    role, args = sys.argv[1], sys.argv[2:]
    if role == "torrent":
        make_torrent(*args)
    elif role == "seed":
        seed(*args)
    elif role == "leech":
        sys.exit(leech(args[0], args[1], args[2], args[3:]))
    else:
        sys.exit("unknown role %s" % role)


if __name__ == "__main__":
    main()
