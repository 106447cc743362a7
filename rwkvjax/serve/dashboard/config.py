"""Settings of the `dashboard` command (light to import)."""

from __future__ import annotations

import dataclasses

from rwkvjax.errors import ConfigError
from rwkvjax.options import option


@dataclasses.dataclass(frozen=True)
class DashboardConfig:
    ckpt_dir: str = option(help="the --ckpt-dir of a `train` run (running or finished)")
    states: str | None = option(None, help="named-states folder to show as a tree (none: the one the run writes to)")
    host: str = option("127.0.0.1", help="address to bind (loopback by default: the page shows session text)")
    port: int = option(8001, help="port")
    api_key: str | None = option(None, help="require ?key=KEY (or 'Authorization: Bearer KEY') for the data")
    cors_origin: str | None = option(None, metavar="ORIGIN", help="let web pages of this origin read the data; "
                                     "others are refused (CORS off)")

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port {self.port}: must be in 1..65535")
