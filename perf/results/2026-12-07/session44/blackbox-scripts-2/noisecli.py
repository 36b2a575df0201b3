#!/usr/bin/env python3
"""Minimal Noise_XX_25519_AESGCM_SHA256 initiator for the ringshare tracker control protocol."""
import os, socket, struct, hmac, hashlib, sys, time, threading, random
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import serialization

RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
def pub(k): return k.public_key().public_bytes(*RAW)
def dh(k, p): return k.exchange(X25519PublicKey.from_public_bytes(p))
def H(x): return hashlib.sha256(x).digest()
def hm(k, d): return hmac.new(k, d, hashlib.sha256).digest()
def hkdf(ck, ikm):
    t = hm(ck, ikm); o1 = hm(t, b'\x01'); o2 = hm(t, o1 + b'\x02'); return o1, o2
def nonce(n): return b'\0\0\0\0' + struct.pack('>Q', n)

class Sym:
    def __init__(self, prologue):
        name = b'Noise_XX_25519_AESGCM_SHA256'
        self.h = name.ljust(32, b'\0'); self.ck = self.h; self.k = None; self.n = 0
        self.mixh(prologue)
    def mixh(self, d): self.h = H(self.h + d)
    def mixk(self, ikm):
        self.ck, t = hkdf(self.ck, ikm); self.k = t; self.n = 0
    def enc(self, p):
        if self.k is None: self.mixh(p); return p
        c = AESGCM(self.k).encrypt(nonce(self.n), p, self.h); self.n += 1; self.mixh(c); return c
    def dec(self, c):
        if self.k is None: self.mixh(c); return c
        p = AESGCM(self.k).decrypt(nonce(self.n), c, self.h); self.n += 1; self.mixh(c); return p

def recv_exact(s, n):
    b = b''
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x: raise EOFError('closed')
        b += x
    return b
def recv_rec(s):
    (l,) = struct.unpack('>H', recv_exact(s, 2)); return recv_exact(s, l)
def send_rec(s, b): s.sendall(struct.pack('>H', len(b)) + b)

class Link:
    def __init__(self, addr, src=None, timeout=10):
        self.s = socket.socket(); self.s.settimeout(timeout)
        if src: self.s.bind((src, 0))
        self.s.connect(addr)
        st = X25519PrivateKey.generate(); e = X25519PrivateKey.generate()
        sy = Sym(b'ringshare control v1')
        ep = pub(e); sy.mixh(ep); msg1 = ep + sy.enc(b''); send_rec(self.s, msg1)
        m2 = recv_rec(self.s)
        re = m2[:32]; sy.mixh(re); sy.mixk(dh(e, re))
        rs = sy.dec(m2[32:80]); sy.mixk(dh(e, rs)); sy.dec(m2[80:])
        c = sy.enc(pub(st)); sy.mixk(dh(st, re)); c += sy.enc(b''); send_rec(self.s, c)
        k1, k2 = hkdf(sy.ck, b''); self.tx = AESGCM(k1); self.rx = AESGCM(k2); self.tn = 0; self.rn = 0
        self.buf = b''
    def send_frame(self, kind, payload):
        f = struct.pack('>II', 8 + len(payload), kind) + payload
        send_rec(self.s, self.tx.encrypt(nonce(self.tn), f, b'')); self.tn += 1
    def recv_frame(self):
        while True:
            if len(self.buf) >= 8:
                l, k = struct.unpack('>II', self.buf[:8])
                if len(self.buf) >= l:
                    p = self.buf[8:l]; self.buf = self.buf[l:]; return k, p
            c = recv_rec(self.s); self.buf += self.rx.decrypt(nonce(self.rn), c, b''); self.rn += 1
    def request(self, payload):
        self.send_frame(1, payload); return self.recv_frame()

def pstr(s):
    b = s.encode(); assert len(b) < 128; return bytes([len(b)]) + b
def list_groups(tok): return b'\x09' + tok
def login(u, p, addr): return b'\x01' + pstr(u) + pstr(p) + pstr(addr)

if __name__ == '__main__':
    host, port = sys.argv[1], int(sys.argv[2])
    l = Link((host, port))
    print('fake', l.request(list_groups(os.urandom(16))))
    k, r = l.request(login('s', 'pw', '127.0.0.1:1'))
    print('login', k, r[:40])
