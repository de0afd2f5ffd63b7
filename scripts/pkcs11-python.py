#!/usr/bin/env python3
"""Drives libbulwark_pkcs11.so from Python (PyKCS11): thread safety and error codes.

Usage: pkcs11-python.py MODULE TOKEN_LABEL USER_PIN
Expects an initialized token with the user PIN set. Exits non-zero on the first failure.
"""
import sys
import threading

import PyKCS11
from PyKCS11 import LowLevel as LL

module, label, pin = sys.argv[1:4]
lib = PyKCS11.PyKCS11Lib()
lib.load(module)
slot = next(s for s in lib.getSlotList(tokenPresent=True)
            if lib.getTokenInfo(s).label.strip() == label)


def expect_error(code, fn, *args):
    try:
        fn(*args)
    except PyKCS11.PyKCS11Error as e:
        if e.value != code:
            raise SystemExit(f"{fn.__name__}: expected {PyKCS11.CKR[code]}, got {PyKCS11.CKR.get(e.value, e.value)}")
        return
    raise SystemExit(f"{fn.__name__}: expected {PyKCS11.CKR[code]}, got CKR_OK")


s = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
expect_error(PyKCS11.CKR_PIN_INCORRECT, s.login, "not-the-pin")
s.login(pin)
expect_error(PyKCS11.CKR_USER_ALREADY_LOGGED_IN, s.login, pin)

pub, priv = s.generateKeyPair(
    [(PyKCS11.CKA_TOKEN, False), (PyKCS11.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
     (PyKCS11.CKA_VERIFY, True)],
    [(PyKCS11.CKA_TOKEN, False), (PyKCS11.CKA_SIGN, True)],
    mecha=PyKCS11.Mechanism(PyKCS11.CKM_EC_KEY_PAIR_GEN))
mech = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA_SHA256)

# Error codes.
expect_error(PyKCS11.CKR_KEY_TYPE_INCONSISTENT, s.sign, priv, b"x", PyKCS11.Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS))
expect_error(PyKCS11.CKR_MECHANISM_INVALID, s.sign, priv, b"x", PyKCS11.Mechanism(0x4242))
sig = bytes(s.sign(priv, b"hello", mech))
if len(sig) != 64:
    raise SystemExit(f"ECDSA P-256 signature must be r||s (64 bytes), got {len(sig)}")
if not s.verify(pub, b"hello", sig, mech):
    raise SystemExit("verify failed")
if s.verify(pub, b"hellO", sig, mech):
    raise SystemExit("verify of a changed message succeeded")
attrs = s.getAttributeValue(priv, [PyKCS11.CKA_SENSITIVE, PyKCS11.CKA_EXTRACTABLE])
if attrs != [True, False]:
    raise SystemExit(f"private key must be sensitive and not extractable: {attrs}")

# Thread safety: 4 threads, each with its own session, sign and verify concurrently.
errors = []


def worker(n):
    try:
        ts = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)
        for i in range(200):
            msg = f"thread {n} message {i}".encode()
            sg = bytes(ts.sign(priv, msg, mech))
            if not ts.verify(pub, msg, sg, mech):
                errors.append(f"thread {n}: bad signature {i}")
                return
        ts.closeSession()
    except Exception as e:  # noqa: BLE001 - report any failure
        errors.append(f"thread {n}: {e!r}")


threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    raise SystemExit("; ".join(errors))
s.logout()
expect_error(PyKCS11.CKR_USER_NOT_LOGGED_IN, s.logout)
s.closeSession()
print("pkcs11-python: error codes and 4-thread signing OK")
