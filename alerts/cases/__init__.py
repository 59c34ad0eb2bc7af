"""Enforcement cases: the bureau's record of one outlet's exceedance of one pollutant,
from the first alert to its closing (alerts/README.md, "Enforcement cases").

`store` is the API the engine, the web app and the CLI call; `workflow` is the transition
table; `marks` the 标记 that take hours out of judgement; `db` the engine and migrations.
"""
