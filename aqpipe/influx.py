"""InfluxDB behind one small interface: write line protocol, query InfluxQL.

Two write paths (DESIGN.md): v1 `/write?db=&rp=` over plain HTTP (InfluxDB 1.x, 3.x,
2.x with a DBRP mapping) and v2 `/api/v2/write` through influxdb-client (2.x, 3.x,
Cloud). Queries always use InfluxQL `/query`, which all three serve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import urllib3

from aqpipe.config import InfluxConfig

# Statuses that say "these points are bad": isolate and dead-letter them. Anything else
# (unreachable, 5xx, 429, and also 401/403/404 - wrong token or missing database, which
# an operator must fix) is retried: dead-lettering every reading for a config error would
# bury the data in letters nobody asked for.
REFUSED_STATUS = frozenset({400, 413, 422})


class WriteError(Exception):
    """A failed write. `status` is None when InfluxDB could not be reached at all."""

    def __init__(self, status: int | None, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"InfluxDB write failed ({status or 'unreachable'}): {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth trying again as is: the server is down or overloaded, the points are fine."""
        return self.status not in REFUSED_STATUS


class QueryError(Exception):
    pass


class PartialResultError(QueryError):
    """InfluxDB answered with `"partial": true`: rows were cut (max-row-limit, a chunk).

    The rows returned are not the whole answer; ask for less (a shorter span, fewer
    series) rather than compute from a silently truncated result.
    """


class Writer(Protocol):
    def write(self, lines: list[str]) -> None: ...
    def close(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class V1Writer:
    """POST /write?db=&rp=&precision=ns with line protocol."""

    def __init__(self, cfg: InfluxConfig) -> None:
        params = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            params["rp"] = cfg.retention_policy
        self.url = cfg.url.rstrip("/") + "/write?" + urlencode(params)
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        token = cfg.secret()
        if token and cfg.username:
            self.headers.update(urllib3.make_headers(basic_auth=f"{cfg.username}:{token}"))
        elif token:
            self.headers["Authorization"] = f"Token {token}"
        self.http = urllib3.PoolManager(
            num_pools=2, maxsize=4, timeout=urllib3.Timeout(connect=3.0, read=cfg.timeout_s), retries=False
        )
        # InfluxDB 1.x: a database lost or not yet created (the server was down when we
        # started) is created on the first 404, then the write is tried again.
        self.create = InfluxQL.from_config(cfg) if cfg.create_database else None

    def write(self, lines: list[str]) -> None:
        body = "\n".join(lines).encode("utf-8")
        try:
            r = self.http.request("POST", self.url, body=body, headers=self.headers)
            if r.status == 404 and self.create is not None and b"database not found" in r.data:
                self.create.execute(f'CREATE DATABASE "{self.create.database}"')
                r = self.http.request("POST", self.url, body=body, headers=self.headers)
        except urllib3.exceptions.HTTPError as e:
            raise WriteError(None, str(e)) from None
        except QueryError as e:
            raise WriteError(404, f"database missing and could not be created: {e}") from None
        if r.status >= 300:
            raise WriteError(r.status, _error_text(r.data), _retry_after(r.headers.get("Retry-After")))

    def close(self) -> None:
        self.http.clear()


class V2Writer:
    """/api/v2/write through influxdb-client, synchronous (our own retry policy applies)."""

    def __init__(self, cfg: InfluxConfig) -> None:
        from influxdb_client import InfluxDBClient, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.bucket = cfg.bucket
        self.org = cfg.org or "-"
        self.precision = WritePrecision.NS
        self.client = InfluxDBClient(
            url=cfg.url, token=cfg.secret() or "", org=self.org, timeout=int(cfg.timeout_s * 1000), retries=False
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        from influxdb_client.rest import ApiException

        try:
            self.api.write(bucket=self.bucket, org=self.org, record="\n".join(lines), write_precision=self.precision)
        except ApiException as e:
            headers = e.headers or {}
            raise WriteError(e.status, _error_text(e.body), _retry_after(headers.get("Retry-After"))) from None
        except urllib3.exceptions.HTTPError as e:
            raise WriteError(None, str(e)) from None
        except OSError as e:
            raise WriteError(None, str(e)) from None

    def close(self) -> None:
        self.client.close()


def make_writer(cfg: InfluxConfig) -> Writer:
    return V2Writer(cfg) if cfg.api == "v2" else V1Writer(cfg)


def _error_text(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return "(no body)"
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            return str(doc.get("error") or doc.get("message") or body)[:500]
    except ValueError:
        pass
    return str(body)[:500]


@dataclass
class InfluxQL:
    """Minimal InfluxQL client over /query (GET for reads, POST for statements)."""

    url: str
    database: str
    token: str | None = None
    username: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_config(cls, cfg: InfluxConfig) -> "InfluxQL":
        db = cfg.database if cfg.api == "v1" else (cfg.database or cfg.bucket)
        return cls(cfg.url, db, cfg.secret(), cfg.username, cfg.timeout_s)

    def __post_init__(self) -> None:
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=3.0, read=self.timeout_s), retries=False)
        self._headers: dict[str, str] = {}
        if self.token and self.username:
            self._headers.update(urllib3.make_headers(basic_auth=f"{self.username}:{self.token}"))
        elif self.token:
            self._headers["Authorization"] = f"Token {self.token}"

    def _call(self, method: str, q: str, epoch: str = "ns") -> dict:
        params = {"db": self.database, "q": q, "epoch": epoch}
        try:
            r = self._http.request(method, self.url.rstrip("/") + "/query?" + urlencode(params), headers=self._headers)
        except urllib3.exceptions.HTTPError as e:
            raise QueryError(f"InfluxDB unreachable at {self.url}: {e}") from None
        if r.status >= 300:
            raise QueryError(f"InfluxQL {q!r} failed ({r.status}): {_error_text(r.data)}")
        doc = json.loads(r.data)
        for result in doc.get("results", []):
            if "error" in result:
                raise QueryError(f"InfluxQL {q!r}: {result['error']}")
        return doc

    def execute(self, statement: str) -> None:
        self._call("POST", statement)

    def rows(self, q: str) -> list[dict[str, Any]]:
        """Rows of every series as dicts (tags merged in), times as epoch ns.

        Raises PartialResultError when InfluxDB marks the answer partial (truncated).
        """
        try:
            return rows_of(self._call("GET", q))
        except PartialResultError as e:
            raise PartialResultError(f"InfluxQL {q[:200]!r}: {e}") from None

    def ping(self) -> bool:
        try:
            r = self._http.request("GET", self.url.rstrip("/") + "/ping")
            return r.status < 300
        except urllib3.exceptions.HTTPError:
            return False


def rows_of(doc: dict) -> list[dict[str, Any]]:
    """Rows of a /query answer; PartialResultError if a result or series is marked partial."""
    out: list[dict[str, Any]] = []
    for result in doc.get("results", []):
        if result.get("partial"):
            raise PartialResultError("result marked partial (rows cut by the server's max-row-limit)")
        for series in result.get("series", []):
            if series.get("partial"):
                raise PartialResultError(f"series {series.get('tags') or series.get('name')} marked partial "
                                         "(rows cut by the server's max-row-limit)")
            tags = series.get("tags", {})
            for values in series.get("values", []):
                row = dict(zip(series["columns"], values))
                row.update(tags)
                out.append(row)
    return out
