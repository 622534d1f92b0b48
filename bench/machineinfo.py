"""What verifying one ADE MachineInfo costs: an ordinary device's, and crafted worst cases.

    python bench/machineinfo.py [--rounds N]

The enrollment URL is reached without a credential, so a MachineInfo must cost at most a few ms. Prints the
best and median time per verification (ms) of:

- a virtual device's MachineInfo (RSA identity, SHA-256, signed attributes, identity and CA carried);
- an ECDSA chain;
- a refused one: a signer from another CA;
- a crafted worst case: six carried RSA-4096 certificates with the signer's issuer name and no key
  identifiers, so that every one is a candidate whose signature must be tried (the check budget stops it).

Prints the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable

from _common import machine  # puts tests/ on sys.path
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from pomona.protocol import machineinfo as mi
from pomona.testing.device_ca import TestDeviceCa, sign_machine_info
from pomona.testing.virtual_device import VirtualDevice


def timed(label: str, fn: Callable[[], object], rounds: int) -> None:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        try:
            fn()
        except mi.MachineInfoError:
            pass
        times.append((time.perf_counter() - start) * 1000)
    print(f"{label:<44} best {min(times):7.3f} ms   median {statistics.median(times):7.3f} ms")


def decoys(issuer: x509.Name, count: int) -> list[x509.Certificate]:
    """CA certificates named like the signer's issuer, without key identifiers, each with its own key."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for i in range(count):
        key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        out.append(
            x509.CertificateBuilder()
            .subject_name(issuer)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(1000 + i)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    print(f"machine: {machine()}")

    ca = TestDeviceCa.generate()
    with VirtualDevice("https://pomona.invalid/enroll") as device:
        body = device.machine_info(ca)
    timed(
        "virtual device (RSA, SHA-256, attributes)",
        lambda: mi.verify_machine_info(body, ca.trusted_keys),
        args.rounds,
    )

    ec_ca = TestDeviceCa.generate(key_type="ec")
    key, cert = ec_ca.issue_device_identity("EC", key_type="ec")
    ec_body = sign_machine_info(
        mi.encode_machine_info(udid="U", serial="S", product="P", version="V"), [(cert, key)]
    )
    timed("ECDSA chain", lambda: mi.verify_machine_info(ec_body, ec_ca.trusted_keys), args.rounds)

    other = TestDeviceCa.generate()
    okey, ocert = other.issue_device_identity("OTHER")
    other_body = sign_machine_info(
        mi.encode_machine_info(udid="U", serial="S", product="P", version="V"), [(ocert, okey)]
    )
    timed(
        "refused: a signer from another CA",
        lambda: mi.verify_machine_info(other_body, ca.trusted_keys),
        args.rounds,
    )

    skey = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    issuer_name = ca.device_ca.cert.subject
    now = dt.datetime.now(dt.UTC)
    scert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "crafted")]))
        .issuer_name(issuer_name)
        .public_key(skey.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(skey, hashes.SHA256())
    )
    crafted = sign_machine_info(
        mi.encode_machine_info(udid="U", serial="S", product="P", version="V"),
        [(scert, skey)],
        certificates=[scert, *decoys(issuer_name, mi.MAX_CERTIFICATES - 1)],
    )
    timed(
        "crafted: 5 RSA-4096 decoys named as issuer",
        lambda: mi.verify_machine_info(crafted, ca.trusted_keys),
        args.rounds,
    )


if __name__ == "__main__":
    main()
