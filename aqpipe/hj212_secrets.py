"""HJ 212 logger secrets: per-MN SM4 key and access password (PW), from a file of their own.

The file is named by the registry (`hj212_secrets_file = "hj212-secrets.toml"` at the
top of outlets.toml or stations.toml, relative to that file), never by aqpipe.toml, so
that the config can be shared and the secrets kept at mode 0600 by the service account:

    [mn."91620503MA00100000000001"]
    key = "30303030303030303030303030303030"   # SM4, 16 bytes as 32 hex digits
    pw = "123456"                               # the logger's PW field

Values are never logged nor shown in a repr; errors name the MN and the field only.
"""

from __future__ import annotations

import logging
import stat
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

from aqpipe.errors import ConfigError

log = logging.getLogger("aqpipe.registry")


class _SecretMap(Mapping[str, bytes]):
    """A read-only MN -> key mapping whose repr shows the MNs, never the keys."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self._data = data

    def __getitem__(self, mn: str) -> bytes:
        return self._data[mn]

    def get(self, mn: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return self._data.get(mn, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<{len(self._data)} HJ 212 secrets for {sorted(self._data)}>"


class Hj212Secrets:
    """SM4 keys (`keys`, by MN) and access passwords (`pw(mn)`)."""

    def __init__(self, keys: dict[str, bytes], pws: dict[str, str]) -> None:
        self.keys: Mapping[str, bytes] = _SecretMap(keys)
        self._pws = pws

    def pw(self, mn: str) -> str | None:
        return self._pws.get(mn)

    def __repr__(self) -> str:
        return f"<Hj212Secrets keys={len(self.keys)} pws={len(self._pws)}>"


def parse_key(text: str, where: str) -> bytes:
    """A 16-byte SM4 key from 32 hex digits."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(where, "key is not hexadecimal (32 hex digits for 16 bytes)") from None
    if len(key) != 16:
        raise ConfigError(where, f"key is {len(key)} bytes; an SM4 key is 16 bytes (32 hex digits)")
    return key


def load_secrets(paths: list[Path]) -> Hj212Secrets:
    """Read and merge secrets files; a missing named file is an error (loggers would be locked out)."""
    keys: dict[str, bytes] = {}
    pws: dict[str, str] = {}
    for path in paths:
        try:
            mode = path.stat().st_mode
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(str(path), "HJ 212 secrets file named by the registry does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(path), f"not valid TOML: {e}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("event=secrets_file_permissions path=%s mode=%o (readable by others: chmod 600)",
                        path, stat.S_IMODE(mode))
        entries = data.get("mn", {})
        if not isinstance(entries, dict) or set(data) - {"mn"}:
            raise ConfigError(str(path), 'expected only [mn."<MN>"] tables with key and/or pw')
        for mn, entry in entries.items():
            where = f"{path}:mn.{mn}"
            if not isinstance(entry, dict) or set(entry) - {"key", "pw"}:
                raise ConfigError(where, "expected only key (32 hex digits) and pw (text)")
            if mn in keys or mn in pws:
                raise ConfigError(where, "MN appears twice in the HJ 212 secrets files")
            if "key" in entry:
                keys[mn] = parse_key(str(entry["key"]), where)
            if "pw" in entry:
                if not isinstance(entry["pw"], str):
                    raise ConfigError(where, "pw must be a string (quote it: pw = \"123456\")")
                pws[mn] = entry["pw"]
    return Hj212Secrets(keys, pws)
