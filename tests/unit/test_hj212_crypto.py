"""HJ 212-2025 SM4: the standard's own vectors, the wire form, and what never raises."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqpipe.decoders.hj212 import Hj212Error, build_encrypted_frame, build_frame, parse_frame
from aqpipe.decoders.hj212_crypto import CipherTextError, cn_is_encrypted, decrypt_cp, encrypt_cp, looks_encrypted
from aqpipe.errors import ConfigError
from aqpipe.hj212_secrets import load_secrets

DATA = Path(__file__).resolve().parents[1] / "data" / "hj212"
KEY30 = bytes([0x30] * 16)  # appendix A.2: "密钥使用16个0x30"
MN = "010000A8900016F000169DC0"


def _cp(frame: str) -> str:
    return frame[frame.index("CP=&&") + 5 : frame.rindex("&&")]


def test_sm4_is_the_gb_t_32907_cipher():
    # GB/T 32907-2016 appendix A example 1: key = plaintext = 0123456789abcdeffedcba9876543210.
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    wire = encrypt_cp(key.decode("latin-1")[:0] + "x" * 16, key)  # any whole block goes through the cipher
    assert wire.startswith("{0x") and len(wire) == 16 * 5 + 1
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    assert enc.update(key).hex() == "681edf34d206965e86b3e94f536e4246"


@pytest.mark.parametrize("case", ["2025_sm4_standard_appendix_A2_example2", "2025_sm4_standard_appendix_A2_example4"])
def test_the_standards_encrypted_examples_decrypt_and_reencrypt_byte_for_byte(case):
    wire_frame = (DATA / "good" / case / "input.txt").read_text().rstrip("\r\n")
    plain = decrypt_cp(_cp(wire_frame), KEY30)
    assert plain.startswith("DataTime=20240520210600;a01011-Min=1.35")
    # ...and encrypting the plain CP gives exactly what the standard printed, CRC included
    # (CRC over the plain segment; the appendix's length field is the plain length).
    seg = wire_frame[6 : wire_frame.index("CP=&&") + 5] + plain + "&&"
    assert build_encrypted_frame(seg, KEY30, length="plain").rstrip("\r\n") == wire_frame
    assert build_frame(seg)[-6:-2] == wire_frame[-4:]


def test_a_remainder_shorter_than_a_block_stays_plain_text():
    text = "a" * 16 + "b" * 5 + "中"  # 16 + 5 + 3 bytes: one block, 8 bytes left plain
    wire = encrypt_cp(text, KEY30)
    assert wire.endswith("}" + "b" * 5 + "中") and wire.count("0x") == 16
    assert decrypt_cp(wire, KEY30) == text
    assert encrypt_cp("short", KEY30) == "short"  # under one block: nothing to encrypt
    with pytest.raises(ValueError, match="multi-byte"):
        encrypt_cp("a" * 15 + "中", KEY30)  # the block boundary would split the character


@pytest.mark.parametrize("cn, encrypted", [
    ("2011", True), ("2051", True), ("2061", True), ("2031", True), ("2062", True), ("2111", True), ("2013", True),
    ("1014", True), ("3020", True), ("9015", False), ("9014", False), ("1062", False), ("3019", False),
])
def test_which_commands_a_2025_logger_encrypts(cn, encrypted):
    assert cn_is_encrypted(cn) is encrypted


@pytest.mark.parametrize("wire", [
    "{0xE4,0x3E}", "{0xE4}", "{}", "{0xZZ" + ",0x00" * 15 + "}", "{0x00" + ",0x00" * 15, "{0x00" + ";0x00" * 15 + "}",
    "{0x00" + ",0x00" * 15 + "}" + "x" * 16, "{0x00,0x00 ,0x00" + ",0x00" * 13 + "}", "DataTime=1",
])
def test_malformed_cipher_text_is_a_cipher_text_error(wire):
    with pytest.raises(CipherTextError):
        decrypt_cp(wire, KEY30)


@given(st.text(max_size=300))
def test_decrypting_any_text_raises_only_cipher_text_error(wire):
    try:
        decrypt_cp(wire, KEY30)
    except CipherTextError:
        pass


@given(st.binary(min_size=16, max_size=16), st.binary(max_size=200).map(lambda b: b.hex()))
def test_decrypting_random_blocks_with_any_key_raises_only_cipher_text_error(key, hexdigits):
    wire = "{" + ",".join(f"0x{hexdigits[i:i+2]}" for i in range(0, len(hexdigits) - 1, 2)) + "}"
    try:
        decrypt_cp(wire, key)
    except CipherTextError:
        pass


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="&#;=,\r\n"), max_size=200),
       st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_an_encrypted_segment_decodes_with_its_key_and_fails_only_with_the_decoders_error_otherwise(
        text, key, other):
    seg = f"QN=20261124140500123;ST=31;CN=2051;PW=pw;MN={MN};Flag=9;CP=&&DataTime=20261124140500;a21026-Info={text}&&"
    framed = build_encrypted_frame(seg, key)
    if looks_encrypted(_cp(framed)):
        frame = parse_frame(framed, {MN: key})
        assert frame.extra == {} and frame.values["a21026"]["Info"] == text and frame.encrypted
        for keys in ({MN: other} if other != key else {}, {}, None):
            with pytest.raises(Hj212Error) as caught:
                parse_frame(framed, keys)
            assert caught.value.kind == "decrypt"


@given(st.binary(max_size=400))
def test_any_bytes_after_an_encrypted_header_raise_only_the_decoders_error(noise):
    seg = f"QN=1;ST=31;CN=2051;PW=pw;MN={MN};Flag=9;CP=&&{{0x".encode() + noise + b"&&"
    try:
        parse_frame(b"##%04d" % len(seg) + seg + b"1C80\r\n", {MN: KEY30})
    except Hj212Error:
        pass


def test_the_secrets_file_never_shows_its_values_and_refuses_bad_keys(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('[mn."M1"]\nkey = "000102030405060708090a0b0c0d0e0f"\npw = "s3cr3t-pw"\n')
    os.chmod(good, 0o600)
    secrets = load_secrets([good])
    assert secrets.keys["M1"] == bytes(range(16)) and secrets.pw("M1") == "s3cr3t-pw"
    assert "s3cr3t" not in repr(secrets) and "0001" not in repr(secrets.keys) and "M1" in repr(secrets.keys)
    for body, says in (('[mn."M1"]\nkey = "0011"\n', "16 bytes"), ('[mn."M1"]\nkey = "zz"\n', "hexadecimal"),
                       ('[mn."M1"]\npw = 123456\n', "string"), ('[mn."M1"]\npass = "x"\n', "only key")):
        bad = tmp_path / "bad.toml"
        bad.write_text(body)
        with pytest.raises(ConfigError) as caught:
            load_secrets([bad])
        assert says in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_secrets([tmp_path / "missing.toml"])


def test_the_cli_decrypts_a_captured_log_with_a_key_file_and_never_prints_the_key(tmp_path):
    import io

    from aqpipe.decoders import hj212_cli

    keyfile = tmp_path / "key.txt"
    keyfile.write_text("# the appendix A.2 test key\n" + KEY30.hex() + "\n")
    captured = (DATA / "good" / "2025_sm4_standard_appendix_A2_example4" / "input.txt").read_bytes()
    out = io.StringIO()
    assert hj212_cli.decode_lines(io.BytesIO(captured), out, hj212_cli.load_key_file(keyfile)) == 0
    record = json.loads(out.getvalue())
    assert (record["version"], record["encrypted"], record["cn"]) == ("2025", True, "2051")
    assert record["values"]["a01014"] == {"Min": 3.2, "Avg": 3.2, "Max": 3.2, "Flag": "N"}
    assert KEY30.hex() not in out.getvalue() and "123456" not in out.getvalue()
    out = io.StringIO()
    assert hj212_cli.decode_lines(io.BytesIO(captured), out) == 1  # without the key: a decrypt error
    assert json.loads(out.getvalue())["error"] == "decrypt"


def test_decryption_from_several_threads_at_once_gives_each_its_own_plain_text():
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"DataTime=2026112408{i:04d};a21026-Avg={i}.5,a21026-Flag=N;a19001-Avg=12.{i % 10}" for i in range(64)]
    wires = [encrypt_cp(t, KEY30) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            assert list(pool.map(lambda w: decrypt_cp(w, KEY30), wires)) == texts


def test_check_config_names_loggers_the_secrets_file_does_not_cover_without_showing_values():
    from aqpipe.hj212_secrets import Hj212Secrets
    from aqpipe.registry import Outlet, Registry

    registry = Registry([], [Outlet(id="A", mn="MN-A", hj212_encrypt=True), Outlet(id="B", mn="MN-B"),
                             Outlet(id="C", mn="MN-C", hj212_encrypt=True)],
                        Hj212Secrets({"MN-C": KEY30}, {"MN-B": "pw-b", "MN-C": "pw-c"}))
    problems = registry.hj212_problems()
    assert problems == ["stack A (MN MN-A): hj212_encrypt = true but no SM4 key in the secrets file",
                        "stack A (MN MN-A): no pw in the secrets file (the gateway refuses it while check_pw is on)"]
    assert not any("pw-" in p or KEY30.hex() in p for p in problems)
