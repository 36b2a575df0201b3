#!/usr/bin/env python3
"""Small driver for ringshare black-box tests (h47)."""
import os, subprocess, threading, queue, time, signal, shutil

BIN = {'new': '/tmp/bin46c', 'old': '/tmp/bin45f'}
ROOT = '/tmp/h48'
MARK = 'zzmark'
PROCS = []  # every Popen we started
LOG = []


def log(*a):
    s = ' '.join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def wait_port_free(port, t=10):
    import socket
    end = time.time() + t
    while time.time() < end:
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('127.0.0.1', port))
            s.close()
            return True
        except OSError:
            s.close()
            time.sleep(0.1)
    raise RuntimeError(f'port {port} still busy')


class Reader:
    def __init__(self, stream, path=None):
        self.q = queue.Queue()
        self.lines = []
        self.path = path
        self.f = open(path, 'a') if path else None
        t = threading.Thread(target=self.run, args=(stream,), daemon=True)
        t.start()

    def run(self, stream):
        for raw in iter(stream.readline, b''):
            line = raw.decode(errors='replace').rstrip('\n')
            self.lines.append(line)
            if self.f:
                self.f.write(line + '\n'); self.f.flush()
            self.q.put(line)
        self.q.put(None)

    def get(self, timeout):
        return self.q.get(timeout=timeout)


class Tracker:
    def __init__(self, ver, info, n, datadir, *extra, name=None):
        self.ver, self.info, self.n, self.datadir = ver, info, n, datadir
        name = name or f'tr{n}'
        self.errpath = f'{os.path.dirname(info)}/{name}-{ver}.err'
        self.outpath = f'{os.path.dirname(info)}/{name}-{ver}.out'
        self.p = subprocess.Popen([f'{BIN[ver]}/ringshare-tracker', info, str(n), '--data-dir', datadir, *extra],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(self.errpath, 'a'))
        PROCS.append(self.p)
        self.out = Reader(self.p.stdout, self.outpath)
        end = time.time() + 15
        while time.time() < end:
            if any('listening on' in l for l in self.out.lines):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f'tracker {n} ({ver}) did not start: rc={self.p.poll()} err={open(self.errpath).read()[-2000:]}')

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill(); self.p.wait()
        return self.p.returncode


def digest(ver, info, n):
    r = subprocess.run([f'{BIN[ver]}/ringshare-tracker', info, str(n), '--digest'], capture_output=True, text=True, timeout=20)
    return (r.stdout.strip() or r.stderr.strip())


class Shell:
    def __init__(self, ver, listen, info, statedir, *extra, name='sh'):
        self.name = name
        d = os.path.dirname(info)
        self.errpath = f'{d}/{name}.err'
        self.p = subprocess.Popen([f'{BIN[ver]}/ringshare', listen, info, '--state-dir', statedir, *extra],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.errpath, 'a'))
        PROCS.append(self.p)
        self.out = Reader(self.p.stdout, f'{d}/{name}.out')
        self.err_seen = 0

    def cmd(self, line, timeout=60, quiet=False):
        self.p.stdin.write((line + '\n' + f'help {MARK}\n').encode()); self.p.stdin.flush()
        res = []
        end = time.time() + timeout
        while True:
            try:
                l = self.out.get(max(0.01, end - time.time()))
            except queue.Empty:
                res.append('<TIMEOUT>'); break
            if l is None:
                res.append('<EOF>'); break
            if MARK in l:
                break
            res.append(l)
        if not quiet:
            log(f'  [{self.name}] > {line}')
            for r in res:
                log(f'  [{self.name}] < {r}')
        return res

    def new_err(self):
        txt = open(self.errpath).read().splitlines()
        new = txt[self.err_seen:]
        self.err_seen = len(txt)
        return new

    def quit(self, timeout=30):
        if self.p.poll() is None:
            try:
                self.p.stdin.write(b'quit\n'); self.p.stdin.flush(); self.p.stdin.close()
            except Exception:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill(); self.p.wait()
        return self.p.returncode

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            self.p.send_signal(sig); self.p.wait(15)


def one(ver, listen, info, statedir, user, pw, ucmd):
    """run one command batch as user (login first) on a throwaway shell; returns lines"""
    sh = Shell(ver, listen, info, statedir, name=f'tmp-{user}')
    sh.cmd(f'login {user} {pw}')
    res = [sh.cmd(c) for c in ucmd]
    sh.quit()
    return res


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            try:
                p.kill(); p.wait(5)
            except Exception:
                pass


def fresh(dirname):
    d = f'{ROOT}/{dirname}'
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def mkfile(path, size, seed=0):
    import random
    os.makedirs(os.path.dirname(path), exist_ok=True)
    r = random.Random(f'{path}-{seed}')
    with open(path, 'wb') as f:
        f.write(r.randbytes(size))
    return path
