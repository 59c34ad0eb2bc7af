"""HJ 212-2025 SM4 encryption of the CP data area, as the standard writes it on the wire.

What the standard says (§6.4.2 and appendix A.2, as quoted by the implementations
listed in ingest/README-hj212.md): SM4 (GB/T 32907-2016), 16-byte key, ECB, no
padding, over the characters between `CP=&&` and the closing `&&`; every 16 characters
are one block, a remainder shorter than 16 stays plain text; the CRC is computed over
the *plain* data segment before encrypting. The appendix prints the cipher text as
`{0xE4,0x3E,...,0xA4}` followed by the plain remainder (`...0x03,0xA4}g=N&&B541`), and
that is the form read and written here.

SM4 comes from `cryptography` (OpenSSL). Pure apart from a per-key, per-thread cache
of cipher contexts: ECB is stateless per block, so one context per key is reused for
every whole-block update (never finalized), which keeps decryption cheap on the hot
path; per thread, because `aqpipe run` decodes in more than one thread.
"""

from __future__ import annotations

import binascii
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

BLOCK = 16
KEY_BYTES = 16


class CipherTextError(ValueError):
    """The CP is not the standard's cipher-text form, or it does not decrypt to text."""


def cn_is_encrypted(cn: str) -> bool:
    """Commands whose CP a 2025 logger encrypts: data commands 2000-2999, 1014 (new key), 3020."""
    return cn[:1] == "2" or cn in _OTHER_ENCRYPTED_CNS


_OTHER_ENCRYPTED_CNS = frozenset({"1014", "3020"})


def looks_encrypted(cp: str) -> bool:
    """A CP in cipher-text form starts with `{0x` (a plain CP starts with a key such as DataTime=)."""
    return cp.startswith("{0x")


_local = threading.local()


def _ctx(key: bytes) -> tuple[CipherContext, CipherContext]:
    contexts: dict[bytes, tuple[CipherContext, CipherContext]] | None = getattr(_local, "contexts", None)
    if contexts is None:
        contexts = _local.contexts = {}
    pair = contexts.get(key)
    if pair is None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an SM4 key is {KEY_BYTES} bytes, this one is {len(key)}")
        cipher = Cipher(algorithms.SM4(key), modes.ECB())
        if len(contexts) > 10000:  # bounded: keys come from the registry, but stay safe
            contexts.clear()
        pair = contexts[key] = (cipher.encryptor(), cipher.decryptor())
    return pair


def encrypt_cp(plain: str, key: bytes) -> str:
    """The wire form of a plain CP: whole 16-byte blocks as `{0xNN,...}`, the remainder as is."""
    raw = plain.encode("utf-8")
    whole = len(raw) - len(raw) % BLOCK
    if whole == 0:
        return plain
    try:
        tail = raw[whole:].decode("utf-8")
    except UnicodeDecodeError:
        # The standard counts 16 *characters* and its examples are ASCII; where a block
        # boundary splits a multi-byte character there is no defined wire form.
        raise ValueError("the plain remainder would split a multi-byte character: "
                         "no wire form is defined for that (keep encrypted CPs ASCII)") from None
    enc = _ctx(key)[0].update(raw[:whole])
    return "{" + ",".join(f"0x{b:02X}" for b in enc) + "}" + tail


def decrypt_cp(wire: str, key: bytes) -> str:
    """The plain CP of a cipher-text CP (`{0x..,..}` + plain remainder of < 16 characters)."""
    close = wire.find("}")
    if not wire.startswith("{0x") or close < 0:
        raise CipherTextError("CP is not in the cipher-text form {0xNN,...}")
    try:
        body = wire[1:close].encode("ascii")
    except UnicodeEncodeError:
        raise CipherTextError("cipher text holds a character that is not ASCII") from None
    tail = wire[close + 1 :]
    # "0xNN" per byte, "," between: checked and taken apart by strided slices (C speed;
    # str.replace + isalnum cost 3x more on the hot path).
    n = (len(body) + 1) // 5
    if (len(body) != 5 * n - 1 or body[0::5] != b"0" * n or body[1::5] != b"x" * n
            or body[4::5] != b"," * (n - 1)):
        raise CipherTextError("cipher text is not a list of 0xNN bytes separated by commas")
    if n % BLOCK:
        raise CipherTextError(f"cipher text is {n} bytes, not a whole number of {BLOCK}-byte SM4 blocks")
    if len(tail.encode("utf-8")) >= BLOCK:
        raise CipherTextError(f"plain remainder after the cipher text is {len(tail)} characters, at most {BLOCK - 1}")
    digits = bytearray(2 * n)
    digits[0::2] = body[2::5]
    digits[1::2] = body[3::5]
    try:
        # unhexlify, not bytes.fromhex: it takes the bytes as they are (no str) and
        # refuses what fromhex would skip (spaces).
        data = binascii.unhexlify(digits)
    except binascii.Error:
        raise CipherTextError("cipher text holds a byte that is not hexadecimal") from None
    plain = _ctx(key)[1].update(data)
    try:
        return (plain + tail.encode("utf-8")).decode("utf-8")
    except UnicodeDecodeError:
        # SM4 with the wrong key gives noise: the usual way a wrong key shows.
        raise CipherTextError("decrypted CP is not text: wrong key for this logger, or a corrupted frame") from None
